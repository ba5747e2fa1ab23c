-- want: runtime: reserved
function handle() cloud.emit("$dead", {forged = true}) end
