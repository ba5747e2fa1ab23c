-- want: timeout
-- pcall must not be able to swallow the timeout and go on.
function handle()
  while true do pcall(function() while true do end end) end
end
