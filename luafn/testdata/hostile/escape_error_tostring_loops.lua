-- want: runtime: (error object is a table value)
function handle()
  error(setmetatable({}, {__tostring = function() while true do end end}))
end
