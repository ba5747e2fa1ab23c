// Package luafn runs untrusted Lua 5.1 functions (gopher-lua) in a sandbox, on warm VMs,
// with every bound enforced while the function runs. The contract is SPEC §4.
//
// # Use
//
//	prog, err := luafn.Compile(luafn.Spec{Name: "temp-alert", Version: 3, Filename: "functions/temp_alert.lua", Source: src})
//	// err is a *CompileError (with Line) for a syntax error: refuse the deploy.
//	fn, err := luafn.New(prog, luafn.Host{KV: store, Pins: pins, WritablePins: outs, GatewayID: id, Logger: log})
//	// New creates the warm VMs and runs the chunk's top level; a failure is a *CompileError.
//	res, err := fn.Invoke(ctx, &luafn.Event{...})
//	// commit res.Effects.KV and .Emits atomically, then do .Publishes and .PinWrites.
//	fn.Close() // after swapping in the next version: waits for invocations in flight
//
// Compile parses and compiles once per version; New builds Limits.Concurrency warm VMs,
// so no event pays a cold start. Invoke is safe for concurrent use and runs on a free VM
// (waiting for one); ordering events by topic is the caller's (the gateway's router).
//
// # Sandbox
//
// Globals: base (assert, error, getmetatable, ipairs, next, pairs, pcall, print, rawequal,
// rawget, rawset, select, setmetatable, tonumber, tostring, type, unpack, xpcall, _G,
// _VERSION), string (no dump), table, math, and the host modules mqtt, kv, cloud, gpio,
// log, json, time, env, gateway. Nothing else: no os, io, debug, package, coroutine,
// load*, dofile, require, module, collectgarbage, getfenv, setfenv, newproxy.
// Coroutines are not offered: a coroutine runs on a thread of its own, which the VM's
// instruction hook does not watch, so it would escape the bounds.
//
// Library tables are read-only proxies, the string metatable is hidden behind a
// read-only stand-in, rawset/setmetatable/table.* refuse them, and setmetatable takes
// tables only: no invocation can change what a later one sees of the libraries.
// Globals a function sets itself persist between invocations on the same warm VM, as in
// Lambda; a VM is discarded and replaced after any bound trips, which resets them.
// Functions do not share VMs, so nothing persists from one function to another.
//
// # Logs
//
// log.debug/info/warn/error and print (which is log.info) join their arguments as Lua's
// print does: each converted as tostring converts it, separated by tabs, so
// log.info("temp", 31.5) logs "temp\t31.5"; string.format makes a line read well. A line
// is cut at Limits.LogLineBytes (4 KiB). Each line is
//
//   - kept in Result.Logs, at most Limits.LogLines (100) per invocation; the rest are
//     dropped and counted in one last entry ("106 more log lines dropped: ...");
//   - reported through Host.OnLog as it is made, with the function, version, event id
//     and the Lua file:line of the call, at most Limits.LogRate (100) lines a second per
//     function over all its invocations. What is over either cap is counted and reported
//     as one LogRecord with Dropped set ("200 log lines dropped (...)"), at most once a
//     second: at the end of the invocation that dropped lines, or from a timer when a
//     report went out less than a second before, and at the latest by Close;
//   - written to Host.Logger at debug level, if set.
//
// Standard globals the sandbox leaves out (os, io, require, ...) read as nil, as any
// unset global; an error on a line that uses one says "os is not available in the
// sandbox" instead of Lua's bare "attempt to index a non-table object(nil)".
//
// # Bounds
//
// Each is set per function in Limits, and trips with an *InvokeError whose Kind is one
// of ErrTimeout, ErrMemory, ErrDepth, ErrRegistry or ErrPattern. A tripped bound cannot
// be caught by pcall: from then on the hook fails every instruction.
//
//   - Timeout: wall time. The VM's instruction hook reads the clock every 1024
//     instructions, and a per-VM watchdog timer records the timeout for calls stuck in
//     Go: builtins that loop in Go (pattern matching, sort, JSON encoding) check for it,
//     and the hook raises it at its next call. The caller's ctx is read with the clock.
//   - Memory: what the VM holds (see memory.go): every allocating instruction and
//     builtin is charged before it runs, and the live data is measured when the charges
//     pass the limit, so one operation cannot outrun the bound and garbage is free.
//   - CallDepth and Registry: nested calls and value-stack slots.
//   - PatternSteps: string.find/match/gmatch/gsub run a Lua 5.1 matcher with a step
//     budget per invocation (gopher-lua's own runs for minutes on a backtracking bomb).
//
// # Values
//
// Go and Lua values cross as JSON does (see json.go): integral numbers become JSON
// integers (exact to 2^53), tables with keys 1..n arrays, other tables objects, the
// empty table {} (an object); NaN, infinities, cycles, functions and nesting deeper than
// 128 are errors naming the value, and so is a string that is not valid UTF-8 (JSON holds
// text: kv.set of binary data is refused rather than stored altered); JSON null is nil.
// event.payload is a table when the payload is a JSON object or array, else the string.
// What handle returns comes back as JSON text in Result.Value, ready for the outbox.
//
// gopher-lua is built from third_party/gopher-lua with two patches (MOONGATE.md there
// says why): a table's iteration index is made by its first walk instead of its first
// write, which halved the allocations of a warm invocation; and an instruction hook
// with read-only accessors, through which the bounds see inside the running VM.
//
// Numbers turn into strings (tostring, ..) in gopher-lua's format, not Lua 5.1's %.14g:
// 1e15 prints as 1000000000000000 and 1/3 as 0.3333333333333333.
//
// # Effects
//
// mqtt.publish, kv.set/del/incr, cloud.emit and gpio.write only record effects in the
// Result; a failed invocation returns none. kv.get and kv.keys see the invocation's own
// writes over the committed state; kv.incr is recorded as a delta for the store to apply
// atomically, and returns the value the function now sees. kv.keys returns at most 1000
// keys, sorted. kv.set(key, nil) deletes. gpio.write drives only Host.WritablePins.
// Stream names starting with '$' are reserved for the gateway.
package luafn
