-- want: memory
-- One CONCAT instruction with many operands.
function handle()
  local s = string.rep("x", 2e6)
  local t = s..s..s..s..s..s..s..s..s..s..s..s..s..s..s..s
  return #t
end
