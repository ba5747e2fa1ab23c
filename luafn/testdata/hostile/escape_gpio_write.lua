-- want: runtime: not writable
function handle() gpio.write("GPIO4", 1) end
