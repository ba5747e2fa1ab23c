-- want: memory
-- gopher-lua fills the array part with nils up to the index: 64M slots.
function handle()
  local t = {}
  t[67108000] = true
end
