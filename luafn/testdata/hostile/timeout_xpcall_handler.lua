-- want: timeout
-- The error handler itself loops.
function handle()
  xpcall(function() error("x") end, function() while true do end end)
end
