-- want: timeout
-- A trap on its own globals only hurts itself, and only until the bound trips.
function handle()
  setmetatable(_G, {__index = function() while true do end end})
  return undefined_global
end
