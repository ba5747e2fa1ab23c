package luafn

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/ast"
	"github.com/yuin/gopher-lua/parse"
)

// Spec is one version of a function, as deployed.
type Spec struct {
	Name     string            // function name; also its KV namespace
	Version  int               // shown in errors
	Filename string            // shown in errors and tracebacks, e.g. "functions/temp_alert.lua"
	Source   string            // Lua 5.1 source text defining handle(event)
	Env      map[string]string // the read-only env table
	Limits   Limits
}

// Program is a compiled Spec: parsed and compiled once, shared by every VM of the version.
type Program struct {
	spec  Spec // Limits with defaults filled in
	proto *lua.FunctionProto
	// unbounded runs without the hook and the watchdog: only benchmarks set it, to
	// measure what the bounds cost.
	unbounded bool
}

// Spec returns the program's spec, with every limit's default filled in.
func (p *Program) Spec() Spec { return p.spec }

// Source limits, checked before parsing. The compiler recurses once per nesting level
// of the syntax tree, so an absurdly nested expression would use the Go stack in
// proportion; Lua 5.1 itself stops at 200 C levels.
const (
	maxSourceBytes = 1 << 20
	maxNesting     = 1000
)

// Compile parses and compiles spec.Source. A syntax error is a *CompileError with the
// line and message; invalid limits are a plain error naming the setting.
func Compile(spec Spec) (*Program, error) {
	if spec.Name == "" {
		return nil, errors.New("compile: function has no name")
	}
	if spec.Filename == "" {
		spec.Filename = spec.Name + ".lua"
	}
	lim, err := spec.Limits.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("function %s: %w", spec.Name, err)
	}
	spec.Limits = lim
	cerr := func(line int, format string, args ...any) error {
		return &CompileError{Function: spec.Name, File: spec.Filename, Line: line, Message: fmt.Sprintf(format, args...)}
	}
	if len(spec.Source) > maxSourceBytes {
		return nil, cerr(0, "source is %d bytes, more than %d", len(spec.Source), maxSourceBytes)
	}
	if strings.HasPrefix(spec.Source, "\x1bLua") {
		return nil, cerr(0, "precompiled bytecode is not accepted")
	}
	chunk, err := parse.Parse(strings.NewReader(spec.Source), spec.Filename)
	if err != nil {
		var pe *parse.Error
		if errors.As(err, &pe) {
			line := pe.Pos.Line
			if line == parse.EOF {
				return nil, cerr(strings.Count(spec.Source, "\n")+1, "%s at end of file", pe.Message)
			}
			return nil, cerr(line, "%s near '%s'", pe.Message, pe.Token)
		}
		return nil, cerr(0, "%v", err)
	}
	if line, deep := tooDeep(chunk); deep {
		return nil, cerr(line, "nesting deeper than %d levels", maxNesting)
	}
	proto, err := compileChunk(chunk, spec.Filename)
	if err != nil {
		var ce *lua.CompileError
		if errors.As(err, &ce) {
			return nil, cerr(ce.Line, "%s", ce.Message)
		}
		return nil, cerr(0, "%v", err)
	}
	compact(proto)
	return &Program{spec: spec, proto: proto}, nil
}

// compact copies the compiled prototypes' slices to their length. gopher-lua's
// compiler gives every Lua function 1024-entry code and line buffers and more, and
// keeps them: some 16 KiB per Lua function, which made a 200-line program weigh 300 KiB.
func compact(p *lua.FunctionProto) {
	p.Code = slices.Clone(p.Code)
	p.DbgSourcePositions = slices.Clone(p.DbgSourcePositions)
	p.Constants = slices.Clone(p.Constants)
	p.FunctionPrototypes = slices.Clone(p.FunctionPrototypes)
	p.DbgLocals = slices.Clone(p.DbgLocals)
	p.DbgCalls = slices.Clone(p.DbgCalls)
	p.DbgUpvalues = slices.Clone(p.DbgUpvalues)
	for _, c := range p.FunctionPrototypes {
		compact(c)
	}
}

// compileChunk turns a compiler panic (a compiler bug, not a user error) into an error
// so that a bad deploy cannot take the gateway down.
func compileChunk(chunk []ast.Stmt, name string) (proto *lua.FunctionProto, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("internal compiler error: %v", r)
		}
	}()
	return lua.Compile(chunk, name)
}

// tooDeep reports whether the syntax tree nests deeper than maxNesting, and where. It
// stops descending at the limit, so its own recursion is bounded.
func tooDeep(chunk []ast.Stmt) (line int, deep bool) {
	w := depthWalker{}
	w.stmts(chunk, 0)
	return w.line, w.deep
}

type depthWalker struct {
	deep bool
	line int
}

func (w *depthWalker) over(n ast.PositionHolder, d int) bool {
	if w.deep {
		return true
	}
	if d > maxNesting {
		w.deep, w.line = true, n.Line()
		return true
	}
	return false
}

func (w *depthWalker) stmts(list []ast.Stmt, d int) {
	for _, s := range list {
		w.stmt(s, d)
	}
}

func (w *depthWalker) exprs(list []ast.Expr, d int) {
	for _, e := range list {
		w.expr(e, d)
	}
}

func (w *depthWalker) stmt(s ast.Stmt, d int) {
	if w.over(s, d) {
		return
	}
	d++
	switch s := s.(type) {
	case *ast.AssignStmt:
		w.exprs(s.Lhs, d)
		w.exprs(s.Rhs, d)
	case *ast.LocalAssignStmt:
		w.exprs(s.Exprs, d)
	case *ast.FuncCallStmt:
		w.expr(s.Expr, d)
	case *ast.DoBlockStmt:
		w.stmts(s.Stmts, d)
	case *ast.WhileStmt:
		w.expr(s.Condition, d)
		w.stmts(s.Stmts, d)
	case *ast.RepeatStmt:
		w.expr(s.Condition, d)
		w.stmts(s.Stmts, d)
	case *ast.IfStmt:
		w.expr(s.Condition, d)
		w.stmts(s.Then, d)
		w.stmts(s.Else, d)
	case *ast.NumberForStmt:
		w.expr(s.Init, d)
		w.expr(s.Limit, d)
		if s.Step != nil {
			w.expr(s.Step, d)
		}
		w.stmts(s.Stmts, d)
	case *ast.GenericForStmt:
		w.exprs(s.Exprs, d)
		w.stmts(s.Stmts, d)
	case *ast.FuncDefStmt:
		if s.Name != nil {
			if s.Name.Func != nil {
				w.expr(s.Name.Func, d)
			}
			if s.Name.Receiver != nil {
				w.expr(s.Name.Receiver, d)
			}
		}
		w.expr(s.Func, d)
	case *ast.ReturnStmt:
		w.exprs(s.Exprs, d)
	}
}

func (w *depthWalker) expr(e ast.Expr, d int) {
	if e == nil || w.over(e, d) {
		return
	}
	d++
	switch e := e.(type) {
	case *ast.AttrGetExpr:
		w.expr(e.Object, d)
		w.expr(e.Key, d)
	case *ast.TableExpr:
		for _, f := range e.Fields {
			w.expr(f.Key, d)
			w.expr(f.Value, d)
		}
	case *ast.FuncCallExpr:
		w.expr(e.Func, d)
		w.expr(e.Receiver, d)
		w.exprs(e.Args, d)
	case *ast.LogicalOpExpr:
		w.expr(e.Lhs, d)
		w.expr(e.Rhs, d)
	case *ast.RelationalOpExpr:
		w.expr(e.Lhs, d)
		w.expr(e.Rhs, d)
	case *ast.StringConcatOpExpr:
		w.expr(e.Lhs, d)
		w.expr(e.Rhs, d)
	case *ast.ArithmeticOpExpr:
		w.expr(e.Lhs, d)
		w.expr(e.Rhs, d)
	case *ast.UnaryMinusOpExpr:
		w.expr(e.Expr, d)
	case *ast.UnaryNotOpExpr:
		w.expr(e.Expr, d)
	case *ast.UnaryLenOpExpr:
		w.expr(e.Expr, d)
	case *ast.FunctionExpr:
		w.stmts(e.Stmts, d)
	}
}
