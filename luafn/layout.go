package luafn

import (
	"fmt"
	"reflect"
	"unsafe"

	lua "github.com/yuin/gopher-lua"
)

// gopher-lua has no allocator hook and no instruction hook, yet two bounds need to see
// inside a running VM: the memory bound must know the size of an operation before it
// runs (one OP_CONCAT or one `t[1e7] = x` can allocate a gigabyte, far faster than any
// watchdog), and it must measure what the VM holds (value stack, frames, table parts).
// The VM calls ctx.Done() before every instruction, which gives us the hook; the mirrors
// below give us read-only access to the few unexported fields the hook needs.
//
// The mirrors are checked field by field (name, offset, type) against the real types when
// the package is used (checkLayout), so a gopher-lua upgrade that moves a field makes New
// fail loudly instead of reading garbage. Nothing is written through a mirror.

// callFrame mirrors lua.callFrame.
type callFrame struct {
	Idx        int
	Fn         *lua.LFunction
	Parent     *callFrame
	Pc         int
	Base       int
	LocalBase  int
	ReturnBase int
	NArgs      int
	NRet       int
	TailCall   int
}

// registry mirrors the prefix of lua.registry: the value stack.
type registry struct {
	array []lua.LValue
	top   int
}

// ltable mirrors lua.LTable.
type ltable struct {
	Metatable lua.LValue
	array     []lua.LValue
	dict      map[lua.LValue]lua.LValue
	strdict   map[string]lua.LValue
	keys      []lua.LValue
	k2i       map[lua.LValue]int
	hashPeak  int
}

// Offsets of the lua.LState fields the hook reads.
var (
	offReg          uintptr
	offCurrentFrame uintptr
	errLayout       error
)

func init() { errLayout = checkLayout() }

func checkLayout() error {
	st := reflect.TypeOf(lua.LState{})
	f, ok := st.FieldByName("reg")
	if !ok || f.Type.Kind() != reflect.Pointer {
		return fmt.Errorf("luafn: unsupported gopher-lua: LState.reg")
	}
	if err := sameLayout(f.Type.Elem(), reflect.TypeOf(registry{}), true); err != nil {
		return err
	}
	offReg = f.Offset
	f, ok = st.FieldByName("currentFrame")
	if !ok || f.Type.Kind() != reflect.Pointer {
		return fmt.Errorf("luafn: unsupported gopher-lua: LState.currentFrame")
	}
	if err := sameLayout(f.Type.Elem(), reflect.TypeOf(callFrame{}), false); err != nil {
		return err
	}
	offCurrentFrame = f.Offset
	return sameLayout(reflect.TypeOf(lua.LTable{}), reflect.TypeOf(ltable{}), false)
}

// sameLayout reports whether every field of mirror sits in real at the same offset with an
// equivalent type. prefix allows real to have more fields after the mirrored ones.
func sameLayout(real, mirror reflect.Type, prefix bool) error {
	if !prefix && real.NumField() != mirror.NumField() {
		return fmt.Errorf("luafn: unsupported gopher-lua: %s has %d fields, want %d", real, real.NumField(), mirror.NumField())
	}
	for i := 0; i < mirror.NumField(); i++ {
		m := mirror.Field(i)
		r, ok := real.FieldByName(m.Name)
		if !ok || r.Offset != m.Offset || !sameType(r.Type, m.Type) {
			return fmt.Errorf("luafn: unsupported gopher-lua: %s.%s moved or changed", real, m.Name)
		}
	}
	return nil
}

// sameType reports whether mirror can stand for real: the same type, or a pointer to a
// mirror of the same name (each mirror's own layout is checked once, by checkLayout).
func sameType(real, mirror reflect.Type) bool {
	if real == mirror {
		return true
	}
	return real.Kind() == reflect.Pointer && mirror.Kind() == reflect.Pointer &&
		mirror.Elem().PkgPath() == reflect.TypeOf(registry{}).PkgPath() &&
		real.Elem().Name() == mirror.Elem().Name()
}

func stateReg(L *lua.LState) *registry {
	return *(**registry)(unsafe.Add(unsafe.Pointer(L), offReg))
}

func stateFrame(L *lua.LState) *callFrame {
	return *(**callFrame)(unsafe.Add(unsafe.Pointer(L), offCurrentFrame))
}

func tableOf(t *lua.LTable) *ltable { return (*ltable)(unsafe.Pointer(t)) }
