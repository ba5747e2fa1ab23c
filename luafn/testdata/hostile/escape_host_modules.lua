-- want: runtime: can only be called while handle runs
-- Effects outside an invocation would belong to none: refused when the chunk loads.
-- (Loaded at deploy; the test deploys it expecting this error at New.)
kv.set("x", 1)
function handle() return "escaped" end
