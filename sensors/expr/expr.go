// Package expr parses and evaluates the value expressions of simulated
// sensors, such as "20+5*sin(t/60)+noise(0.2)".
//
// The language is deliberately tiny: float64 numbers, the variable t
// (seconds since the sensor started), the constants pi and e, the operators
// + - * / % ^ (power, right associative) and unary minus, parentheses, and a
// fixed set of functions (see funcs). There are no loops, assignments or
// user-defined names, so evaluating an expression always terminates and
// costs at most a few operations per node.
//
// Expressions come from the configuration file, so the parser bounds the
// input size and nesting depth and never panics.
package expr

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Limits on the input, so a hostile or broken config cannot exhaust the
// stack or memory while parsing.
const (
	MaxLen   = 1024
	MaxDepth = 64
)

// Vars are the inputs of one evaluation.
type Vars struct {
	T    float64    // seconds since the sensor started
	Rand *rand.Rand // source for noise() and spike(); nil makes both return 0
}

// Expr is a parsed expression. It is immutable and safe for concurrent use
// (as long as concurrent evaluations do not share a Rand).
type Expr struct {
	root node
	src  string
}

// Parse parses s. Errors give the byte offset of the problem.
func Parse(s string) (*Expr, error) {
	if len(s) > MaxLen {
		return nil, fmt.Errorf("expression longer than %d bytes", MaxLen)
	}
	p := &parser{src: s}
	p.next()
	n, err := p.parseExpr(0)
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tokEOF {
		return nil, p.errorf("unexpected %s", p.tok)
	}
	return &Expr{root: n, src: s}, nil
}

// Eval evaluates the expression. Domain errors follow IEEE 754 (1/0 is +Inf,
// sqrt(-1) is NaN); callers decide what to do with non-finite results.
func (e *Expr) Eval(v Vars) float64 { return e.root.eval(&v) }

// String returns the expression in canonical, fully parenthesised form.
// Parsing it again gives an equivalent expression.
func (e *Expr) String() string {
	var b strings.Builder
	e.root.format(&b)
	return b.String()
}

// Source returns the text the expression was parsed from.
func (e *Expr) Source() string { return e.src }

// funcs lists the functions an expression may call, with their arity, for
// documentation and error messages.
var funcs = map[string]int{
	"sin": 1, "cos": 1, "tan": 1, "asin": 1, "acos": 1, "atan": 1,
	"abs": 1, "sqrt": 1, "exp": 1, "log": 1, "floor": 1, "ceil": 1, "round": 1,
	"min": 2, "max": 2, "pow": 2, "mod": 2,
	"clamp": 3,
	// step(x) is 0 for x < 0 and 1 otherwise: "20+5*step(t-60)" jumps by 5 after a minute.
	"step": 1,
	// pulse(x, period, width) is 1 during the first width of every period:
	// "30*pulse(t, 600, 5)" spikes for 5 s every 10 min.
	"pulse": 3,
	// square(x, period) alternates 0 and 1 every half period.
	"square": 2,
	// noise(a) is uniform in [-a, a].
	"noise": 1,
	// spike(p) is 1 with probability p at each evaluation, else 0.
	"spike": 1,
}

type node interface {
	eval(v *Vars) float64
	format(b *strings.Builder)
}

type num float64

func (n num) eval(*Vars) float64 { return float64(n) }
func (n num) format(b *strings.Builder) {
	b.WriteString(strconv.FormatFloat(float64(n), 'g', -1, 64))
}

type varT struct{}

func (varT) eval(v *Vars) float64      { return v.T }
func (varT) format(b *strings.Builder) { b.WriteString("t") }

type neg struct{ x node }

func (n neg) eval(v *Vars) float64 { return -n.x.eval(v) }
func (n neg) format(b *strings.Builder) {
	b.WriteString("(-")
	n.x.format(b)
	b.WriteString(")")
}

type binary struct {
	op   byte
	l, r node
}

func (n binary) eval(v *Vars) float64 {
	l, r := n.l.eval(v), n.r.eval(v)
	switch n.op {
	case '+':
		return l + r
	case '-':
		return l - r
	case '*':
		return l * r
	case '/':
		return l / r
	case '%':
		return math.Mod(l, r)
	default: // '^'
		return math.Pow(l, r)
	}
}

func (n binary) format(b *strings.Builder) {
	b.WriteString("(")
	n.l.format(b)
	b.WriteByte(n.op)
	n.r.format(b)
	b.WriteString(")")
}

type call struct {
	name string
	args []node
}

func (n call) eval(v *Vars) float64 {
	var a [3]float64
	for i, x := range n.args {
		a[i] = x.eval(v)
	}
	switch n.name {
	case "sin":
		return math.Sin(a[0])
	case "cos":
		return math.Cos(a[0])
	case "tan":
		return math.Tan(a[0])
	case "asin":
		return math.Asin(a[0])
	case "acos":
		return math.Acos(a[0])
	case "atan":
		return math.Atan(a[0])
	case "abs":
		return math.Abs(a[0])
	case "sqrt":
		return math.Sqrt(a[0])
	case "exp":
		return math.Exp(a[0])
	case "log":
		return math.Log(a[0])
	case "floor":
		return math.Floor(a[0])
	case "ceil":
		return math.Ceil(a[0])
	case "round":
		return math.Round(a[0])
	case "min":
		return math.Min(a[0], a[1])
	case "max":
		return math.Max(a[0], a[1])
	case "pow":
		return math.Pow(a[0], a[1])
	case "mod":
		return math.Mod(a[0], a[1])
	case "clamp":
		return math.Max(a[1], math.Min(a[2], a[0]))
	case "step":
		if a[0] < 0 {
			return 0
		}
		return 1
	case "pulse":
		return boolf(a[1] > 0 && posMod(a[0], a[1]) < a[2])
	case "square":
		return boolf(a[1] > 0 && posMod(a[0], a[1]) < a[1]/2)
	case "noise":
		if v.Rand == nil {
			return 0
		}
		return (v.Rand.Float64()*2 - 1) * a[0]
	default: // "spike"
		if v.Rand == nil {
			return 0
		}
		return boolf(v.Rand.Float64() < a[0])
	}
}

func (n call) format(b *strings.Builder) {
	b.WriteString(n.name)
	b.WriteString("(")
	for i, x := range n.args {
		if i > 0 {
			b.WriteString(",")
		}
		x.format(b)
	}
	b.WriteString(")")
}

// posMod is x mod m in [0, m), so periodic functions behave the same for
// negative x.
func posMod(x, m float64) float64 {
	r := math.Mod(x, m)
	if r < 0 {
		r += m
	}
	return r
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Parser: precedence climbing over a hand-written scanner.

type tokKind int

const (
	tokEOF tokKind = iota
	tokNum
	tokIdent
	tokOp // one of + - * / % ^ ( ) ,
	tokBad
)

type token struct {
	kind tokKind
	pos  int
	text string
	val  float64
}

func (t token) String() string {
	switch t.kind {
	case tokEOF:
		return "end of expression"
	case tokBad:
		return fmt.Sprintf("invalid token %q", t.text)
	default:
		return strconv.Quote(t.text)
	}
}

type parser struct {
	src   string
	pos   int
	tok   token
	depth int
}

var errTooDeep = fmt.Errorf("expression nested deeper than %d levels", MaxDepth)

func (p *parser) errorf(format string, args ...any) error {
	return fmt.Errorf("at offset %d: %s", p.tok.pos, fmt.Sprintf(format, args...))
}

func (p *parser) next() {
	for p.pos < len(p.src) && (p.src[p.pos] == ' ' || p.src[p.pos] == '\t') {
		p.pos++
	}
	start := p.pos
	if p.pos >= len(p.src) {
		p.tok = token{kind: tokEOF, pos: start}
		return
	}
	c := p.src[p.pos]
	switch {
	case isDigit(c) || c == '.':
		for p.pos < len(p.src) && (isDigit(p.src[p.pos]) || p.src[p.pos] == '.') {
			p.pos++
		}
		// Exponent: 1e3, 2.5E-4.
		if p.pos < len(p.src) && (p.src[p.pos] == 'e' || p.src[p.pos] == 'E') {
			q := p.pos + 1
			if q < len(p.src) && (p.src[q] == '+' || p.src[q] == '-') {
				q++
			}
			if q < len(p.src) && isDigit(p.src[q]) {
				for q < len(p.src) && isDigit(p.src[q]) {
					q++
				}
				p.pos = q
			}
		}
		text := p.src[start:p.pos]
		v, err := strconv.ParseFloat(text, 64)
		if err != nil {
			p.tok = token{kind: tokBad, pos: start, text: text}
			return
		}
		p.tok = token{kind: tokNum, pos: start, text: text, val: v}
	case isLetter(c):
		for p.pos < len(p.src) && (isLetter(p.src[p.pos]) || isDigit(p.src[p.pos])) {
			p.pos++
		}
		p.tok = token{kind: tokIdent, pos: start, text: p.src[start:p.pos]}
	case strings.IndexByte("+-*/%^(),", c) >= 0:
		p.pos++
		p.tok = token{kind: tokOp, pos: start, text: p.src[start:p.pos]}
	default:
		p.tok = token{kind: tokBad, pos: start, text: p.src[start : start+1]}
	}
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' }

// precedence gives the binding power of the left-associative binary
// operators; ^ is handled in parseUnary because it binds tighter than unary
// minus and associates to the right.
func precedence(op string) int {
	switch op {
	case "+", "-":
		return 1
	case "*", "/", "%":
		return 2
	}
	return 0
}

func (p *parser) parseExpr(minPrec int) (node, error) {
	p.depth++
	defer func() { p.depth-- }()
	if p.depth > MaxDepth {
		return nil, errTooDeep
	}
	left, err := p.parseUnary()
	if err != nil {
		return nil, err
	}
	for p.tok.kind == tokOp {
		prec := precedence(p.tok.text)
		if prec == 0 || prec < minPrec {
			break
		}
		op := p.tok.text[0]
		p.next()
		r, err := p.parseExpr(prec + 1)
		if err != nil {
			return nil, err
		}
		left = binary{op: op, l: left, r: r}
	}
	return left, nil
}

// parseUnary binds unary minus looser than ^ (so -2^2 is -4, as in
// mathematics) and tighter than * and /.
func (p *parser) parseUnary() (node, error) {
	if p.tok.kind == tokOp && (p.tok.text == "-" || p.tok.text == "+") {
		minus := p.tok.text == "-"
		p.next()
		p.depth++
		defer func() { p.depth-- }()
		if p.depth > MaxDepth {
			return nil, errTooDeep
		}
		x, err := p.parseUnary()
		if err != nil {
			return nil, err
		}
		if minus {
			return neg{x}, nil
		}
		return x, nil
	}
	base, err := p.parsePrimary()
	if err != nil {
		return nil, err
	}
	if p.tok.kind == tokOp && p.tok.text == "^" {
		p.next()
		exp, err := p.parseExpr(3) // above every binary operator; may start with a unary minus: 2^-1
		if err != nil {
			return nil, err
		}
		return binary{op: '^', l: base, r: exp}, nil
	}
	return base, nil
}

func (p *parser) parsePrimary() (node, error) {
	switch t := p.tok; t.kind {
	case tokNum:
		p.next()
		return num(t.val), nil
	case tokIdent:
		p.next()
		if p.tok.kind == tokOp && p.tok.text == "(" {
			return p.parseCall(t)
		}
		switch t.text {
		case "t":
			return varT{}, nil
		case "pi":
			return num(math.Pi), nil
		case "e":
			return num(math.E), nil
		}
		if _, ok := funcs[t.text]; ok {
			return nil, fmt.Errorf("at offset %d: function %s needs arguments in parentheses", t.pos, t.text)
		}
		return nil, fmt.Errorf("at offset %d: unknown name %q (variables: t, pi, e)", t.pos, t.text)
	case tokOp:
		if t.text == "(" {
			p.next()
			x, err := p.parseExpr(0)
			if err != nil {
				return nil, err
			}
			if p.tok.kind != tokOp || p.tok.text != ")" {
				return nil, p.errorf("expected \")\", got %s", p.tok)
			}
			p.next()
			return x, nil
		}
	}
	return nil, p.errorf("unexpected %s", p.tok)
}

func (p *parser) parseCall(name token) (node, error) {
	arity, ok := funcs[name.text]
	if !ok {
		return nil, fmt.Errorf("at offset %d: unknown function %q", name.pos, name.text)
	}
	p.next() // (
	var args []node
	if p.tok.kind != tokOp || p.tok.text != ")" {
		for {
			a, err := p.parseExpr(0)
			if err != nil {
				return nil, err
			}
			args = append(args, a)
			if p.tok.kind == tokOp && p.tok.text == "," {
				p.next()
				continue
			}
			break
		}
	}
	if p.tok.kind != tokOp || p.tok.text != ")" {
		return nil, p.errorf("expected \",\" or \")\" in call of %s, got %s", name.text, p.tok)
	}
	p.next()
	if len(args) != arity {
		return nil, fmt.Errorf("at offset %d: %s takes %d argument(s), got %d", name.pos, name.text, arity, len(args))
	}
	return call{name: name.text, args: args}, nil
}

// ErrNotFinite is returned by EvalFinite when the result is NaN or infinite.
var ErrNotFinite = errors.New("result is not a finite number")

// EvalFinite evaluates e and reports NaN or ±Inf as an error, for callers
// that pass the value on as a reading.
func (e *Expr) EvalFinite(v Vars) (float64, error) {
	x := e.Eval(v)
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return x, fmt.Errorf("%s at t=%g: %w", e.src, v.T, ErrNotFinite)
	}
	return x, nil
}
