-- want: timeout
function handle()
  string.gsub("abc", "%w", function() while true do end end)
end
