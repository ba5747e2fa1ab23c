-- want: runtime: (error object is a table value)
function handle()
  error(setmetatable({}, {__tostring = function() error("nested") end}))
end
