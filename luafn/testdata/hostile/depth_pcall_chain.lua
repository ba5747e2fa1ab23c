-- want: depth
-- pcall catches the error at each level, but the bound stays tripped.
local function f() pcall(f) return f() end
function handle() f() end
