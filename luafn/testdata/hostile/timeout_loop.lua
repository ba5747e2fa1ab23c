-- want: timeout
function handle() while true do end end
