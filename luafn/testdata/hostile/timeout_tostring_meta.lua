-- want: timeout
function handle()
  return tostring(setmetatable({}, {__tostring = function() while true do end end}))
end
