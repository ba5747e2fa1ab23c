package expr

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestEval(t *testing.T) {
	cases := []struct {
		src  string
		t    float64
		want float64
	}{
		{"1+2*3", 0, 7},
		{"(1+2)*3", 0, 9},
		{"10-4-3", 0, 3},
		{"2^3^2", 0, 512},
		{"-2^2", 0, -4},
		{"2^-1", 0, 0.5},
		{"-t", 5, -5},
		{"7%4", 0, 3},
		{"1.5e2+.5", 0, 150.5},
		{"20+5*sin(t/60)", 0, 20},
		{"20+5*sin(t/60)", 30 * math.Pi, 25},
		{"cos(pi)", 0, -1},
		{"e", 0, math.E},
		{"min(3, t)", 1, 1},
		{"max(3, t)", 1, 3},
		{"clamp(t, 0, 10)", 42, 10},
		{"clamp(t, 0, 10)", -1, 0},
		{"20+5*step(t-60)", 59.9, 20},
		{"20+5*step(t-60)", 60, 25},
		{"30*pulse(t, 600, 5)", 601, 30},
		{"30*pulse(t, 600, 5)", 606, 0},
		{"square(t, 10)", 4, 1},
		{"square(t, 10)", 6, 0},
		{"square(t, 10)", -4, 0}, // periodic for negative t too
		{"floor(2.7)+ceil(2.2)+round(2.5)+abs(-1)", 0, 2 + 3 + 3 + 1},
		{"sqrt(16)+log(exp(2))+pow(2,10)+mod(10,3)", 0, 4 + 2 + 1024 + 1},
		{"noise(5)", 0, 0}, // no Rand: deterministic zero
		{"spike(1)", 0, 0},
	}
	for _, c := range cases {
		e, err := Parse(c.src)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.src, err)
			continue
		}
		if got := e.Eval(Vars{T: c.t}); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%q at t=%g = %g, want %g", c.src, c.t, got, c.want)
		}
	}
}

func TestRandomFunctions(t *testing.T) {
	e, err := Parse("20+noise(0.5)")
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	var lo, hi = math.Inf(1), math.Inf(-1)
	for range 10000 {
		x := e.Eval(Vars{Rand: r})
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	if lo < 19.5 || hi > 20.5 || hi-lo < 0.9 {
		t.Errorf("noise(0.5) around 20 spans [%g, %g], want within and most of [19.5, 20.5]", lo, hi)
	}

	s, err := Parse("spike(0.1)")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range 10000 {
		n += int(s.Eval(Vars{Rand: r}))
	}
	if n < 800 || n > 1200 {
		t.Errorf("spike(0.1) fired %d times in 10000, want about 1000", n)
	}
}

func TestParseErrors(t *testing.T) {
	cases := []struct{ src, want string }{
		{"", "unexpected end of expression"},
		{"1+", "unexpected end of expression"},
		{"(1+2", `expected ")"`},
		{"x+1", `unknown name "x"`},
		{"foo(1)", `unknown function "foo"`},
		{"sin", "needs arguments"},
		{"sin(1,2)", "sin takes 1 argument(s), got 2"},
		{"min(1)", "min takes 2 argument(s), got 1"},
		{"1 $ 2", `invalid token "$"`},
		{"1.2.3", `invalid token "1.2.3"`},
		{"1 2", `unexpected "2"`},
		{strings.Repeat("(", 100) + "1" + strings.Repeat(")", 100), "nested deeper"},
		{strings.Repeat("-", 100) + "1", "nested deeper"},
		{strings.Repeat("1+", 600) + "1", "longer than"},
	}
	for _, c := range cases {
		_, err := Parse(c.src)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want error containing %q", c.src, err, c.want)
		}
	}
}

func TestEvalFinite(t *testing.T) {
	e, err := Parse("1/(t-1)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.EvalFinite(Vars{T: 1}); err == nil {
		t.Error("1/0 should be reported as not finite")
	}
	if v, err := e.EvalFinite(Vars{T: 2}); err != nil || v != 1 {
		t.Errorf("EvalFinite(t=2) = %g, %v", v, err)
	}
}

// FuzzParse checks that the parser never panics on config input, and that
// whatever it accepts prints to a form that parses back to the same value.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"20+5*sin(t/60)", "noise(0.2)+step(t-5)*3", "-2^-2^t", "((t))", "clamp(t,1,2)%3",
		"1e308*1e308", "pulse(t, 0, 0)", "1.5e+3", "", ")(", "sin(", "2^", "pi*e",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e, err := Parse(s)
		if err != nil {
			return
		}
		v1 := e.Eval(Vars{T: 1.5})
		printed := e.String()
		e2, err := Parse(printed)
		if err != nil && (len(printed) > MaxLen || errors.Is(err, errTooDeep)) {
			return // the added parentheses pushed it over a limit
		}
		if err != nil {
			t.Fatalf("canonical form %q of %q does not parse: %v", printed, s, err)
		}
		v2 := e2.Eval(Vars{T: 1.5})
		if v1 != v2 && !(math.IsNaN(v1) && math.IsNaN(v2)) {
			t.Fatalf("%q = %g but its canonical form %q = %g", s, v1, printed, v2)
		}
	})
}
