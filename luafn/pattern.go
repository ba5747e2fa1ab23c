package luafn

import (
	"fmt"

	lua "github.com/yuin/gopher-lua"
)

// Lua 5.1 pattern matching, ported from lstrlib.c. gopher-lua's own matcher runs in Go
// without looking at the context, so a backtracking pattern can run for minutes; this
// one counts its steps against Limits.PatternSteps and watches for a tripped bound every
// 1024 steps. One deliberate difference from 5.1: a pattern ends at its last byte, not
// at an embedded "\0" (as in Lua 5.2).

const (
	maxCaptures   = 32 // LUA_MAXCAPTURES
	maxMatchDepth = 200
	capUnfinished = -1
	capPosition   = -2
	patSpecials   = "^$*+?.([%-"
)

type capture struct{ init, len int }

type matchState struct {
	v       *vm
	src     string
	pat     string
	level   int
	capture [maxCaptures]capture
	depth   int
	steps   int64 // steps taken by this call
	budget  int64 // steps left in the invocation when this call started
}

func (v *vm) newMatch(src, pat string) *matchState {
	return &matchState{v: v, src: src, pat: pat, budget: v.patternSteps}
}

// done charges the steps taken to the invocation.
func (ms *matchState) done() { ms.v.patternSteps -= ms.steps }

func (ms *matchState) step() {
	ms.steps++
	if ms.steps&1023 == 0 {
		ms.check()
	}
}

func (ms *matchState) check() {
	if ms.steps > ms.budget {
		ms.done()
		ms.v.trip(ErrPattern, fmt.Sprintf("pattern matching limit exceeded: more than %d steps in one invocation", ms.v.limits.PatternSteps))
	}
	ms.v.raiseIfTripped()
}

func (ms *matchState) error(format string, args ...any) {
	ms.done()
	ms.v.L.RaiseError("%s", fmt.Sprintf(format, args...))
}

func (ms *matchState) classEnd(p int) int {
	pat := ms.pat
	c := pat[p]
	p++
	switch c {
	case '%':
		if p >= len(pat) {
			ms.error("malformed pattern (ends with '%%')")
		}
		return p + 1
	case '[':
		if p < len(pat) && pat[p] == '^' {
			p++
		}
		for { // look for a ']'
			if p >= len(pat) {
				ms.error("malformed pattern (missing ']')")
			}
			c := pat[p]
			p++
			if c == '%' && p < len(pat) {
				p++ // skip escapes (e.g. '%]')
			}
			if p < len(pat) && pat[p] == ']' {
				return p + 1
			}
			if p >= len(pat) {
				ms.error("malformed pattern (missing ']')")
			}
		}
	}
	return p
}

func isalpha(c byte) bool  { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isdigit(c byte) bool  { return '0' <= c && c <= '9' }
func islower(c byte) bool  { return 'a' <= c && c <= 'z' }
func isupper(c byte) bool  { return 'A' <= c && c <= 'Z' }
func isspace(c byte) bool  { return c == ' ' || '\t' <= c && c <= '\r' }
func iscntrl(c byte) bool  { return c < 32 || c == 127 }
func isalnum(c byte) bool  { return isalpha(c) || isdigit(c) }
func ispunct(c byte) bool  { return c > 32 && c < 127 && !isalnum(c) }
func isxdigit(c byte) bool { return isdigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func tolower(c byte) byte {
	if isupper(c) {
		return c + 32
	}
	return c
}

func matchClass(c, cl byte) bool {
	var res bool
	switch tolower(cl) {
	case 'a':
		res = isalpha(c)
	case 'c':
		res = iscntrl(c)
	case 'd':
		res = isdigit(c)
	case 'l':
		res = islower(c)
	case 'p':
		res = ispunct(c)
	case 's':
		res = isspace(c)
	case 'u':
		res = isupper(c)
	case 'w':
		res = isalnum(c)
	case 'x':
		res = isxdigit(c)
	case 'z':
		res = c == 0
	default:
		return cl == c
	}
	if islower(cl) {
		return res
	}
	return !res
}

// matchBracketClass matches c against the class pat[p:ec+1], where pat[p] is '[' and
// pat[ec] is ']'.
func (ms *matchState) matchBracketClass(c byte, p, ec int) bool {
	pat := ms.pat
	sig := true
	if pat[p+1] == '^' {
		sig = false
		p++
	}
	for p++; p < ec; p++ {
		switch {
		case pat[p] == '%':
			p++
			if matchClass(c, pat[p]) {
				return sig
			}
		case pat[p+1] == '-' && p+2 < ec:
			p += 2
			if pat[p-2] <= c && c <= pat[p] {
				return sig
			}
		case pat[p] == c:
			return sig
		}
	}
	return !sig
}

func (ms *matchState) singleMatch(s, p, ep int) bool {
	if s >= len(ms.src) {
		return false
	}
	c := ms.src[s]
	switch ms.pat[p] {
	case '.':
		return true
	case '%':
		return matchClass(c, ms.pat[p+1])
	case '[':
		return ms.matchBracketClass(c, p, ep-1)
	}
	return ms.pat[p] == c
}

// match returns the end of the match of pat[p:] at src[s:], or -1. Its recursion is
// bounded: Lua 5.1 relies on the C stack, which is not ours to exhaust.
func (ms *matchState) match(s, p int) int {
	ms.depth++
	if ms.depth > maxMatchDepth {
		ms.done()
		ms.v.trip(ErrPattern, fmt.Sprintf("pattern too complex: more than %d nested items", maxMatchDepth))
		ms.v.raiseIfTripped()
	}
	e := ms.doMatch(s, p)
	ms.depth--
	return e
}

func (ms *matchState) doMatch(s, p int) int {
	pat := ms.pat
	for {
		ms.step()
		if p >= len(pat) { // end of pattern
			return s
		}
		switch pat[p] {
		case '(':
			if p+1 < len(pat) && pat[p+1] == ')' {
				return ms.startCapture(s, p+2, capPosition)
			}
			return ms.startCapture(s, p+1, capUnfinished)
		case ')':
			return ms.endCapture(s, p+1)
		case '$':
			if p+1 == len(pat) {
				if s == len(ms.src) {
					return s
				}
				return -1
			}
		case '%':
			if p+1 < len(pat) {
				switch c := pat[p+1]; {
				case c == 'b':
					s = ms.matchBalance(s, p+2)
					if s == -1 {
						return -1
					}
					p += 4
					continue
				case c == 'f':
					p += 2
					if p >= len(pat) || pat[p] != '[' {
						ms.error("missing '[' after '%%f' in pattern")
					}
					ep := ms.classEnd(p)
					var prev, cur byte
					if s > 0 {
						prev = ms.src[s-1]
					}
					if s < len(ms.src) {
						cur = ms.src[s]
					}
					if ms.matchBracketClass(prev, p, ep-1) || !ms.matchBracketClass(cur, p, ep-1) {
						return -1
					}
					p = ep
					continue
				case isdigit(c):
					s = ms.matchCapture(s, c)
					if s == -1 {
						return -1
					}
					p += 2
					continue
				}
			}
		}
		// A single pattern item, maybe with a repetition suffix.
		ep := ms.classEnd(p)
		m := ms.singleMatch(s, p, ep)
		var suffix byte
		if ep < len(pat) {
			suffix = pat[ep]
		}
		switch suffix {
		case '?':
			if m {
				if res := ms.match(s+1, ep+1); res != -1 {
					return res
				}
			}
			p = ep + 1
		case '*':
			return ms.maxExpand(s, p, ep)
		case '+':
			if !m {
				return -1
			}
			return ms.maxExpand(s+1, p, ep)
		case '-':
			return ms.minExpand(s, p, ep)
		default:
			if !m {
				return -1
			}
			s++
			p = ep
		}
	}
}

func (ms *matchState) maxExpand(s, p, ep int) int {
	i := 0
	for ms.singleMatch(s+i, p, ep) {
		ms.step()
		i++
	}
	for ; i >= 0; i-- { // try with the most repetitions first
		if res := ms.match(s+i, ep+1); res != -1 {
			return res
		}
	}
	return -1
}

func (ms *matchState) minExpand(s, p, ep int) int {
	for {
		if res := ms.match(s, ep+1); res != -1 {
			return res
		}
		if !ms.singleMatch(s, p, ep) {
			return -1
		}
		s++
	}
}

func (ms *matchState) startCapture(s, p, what int) int {
	if ms.level >= maxCaptures {
		ms.error("too many captures")
	}
	ms.capture[ms.level] = capture{init: s, len: what}
	ms.level++
	res := ms.match(s, p)
	if res == -1 {
		ms.level--
	}
	return res
}

func (ms *matchState) endCapture(s, p int) int {
	l := ms.captureToClose()
	ms.capture[l].len = s - ms.capture[l].init
	res := ms.match(s, p)
	if res == -1 {
		ms.capture[l].len = capUnfinished
	}
	return res
}

func (ms *matchState) captureToClose() int {
	for l := ms.level - 1; l >= 0; l-- {
		if ms.capture[l].len == capUnfinished {
			return l
		}
	}
	ms.error("invalid pattern capture")
	return 0
}

func (ms *matchState) matchBalance(s, p int) int {
	if p+1 >= len(ms.pat) {
		ms.error("unbalanced pattern")
	}
	if s >= len(ms.src) || ms.src[s] != ms.pat[p] {
		return -1
	}
	b, e := ms.pat[p], ms.pat[p+1]
	cont := 1
	for s++; s < len(ms.src); s++ {
		ms.step()
		switch ms.src[s] {
		case e:
			if cont--; cont == 0 {
				return s + 1
			}
		case b:
			cont++
		}
	}
	return -1
}

func (ms *matchState) matchCapture(s int, c byte) int {
	l := ms.checkCapture(c)
	n := ms.capture[l].len
	init := ms.capture[l].init
	if len(ms.src)-s >= n && ms.src[init:init+n] == ms.src[s:s+n] {
		ms.steps += int64(n) / 16
		return s + n
	}
	return -1
}

func (ms *matchState) checkCapture(c byte) int {
	l := int(c) - '1'
	if l < 0 || l >= ms.level || ms.capture[l].len == capUnfinished {
		ms.error("invalid capture index")
	}
	return l
}

// captureValue returns capture i of the match src[s:e]; capture 0 is the whole match
// when the pattern has no captures.
func (ms *matchState) captureValue(i, s, e int) lua.LValue {
	if i >= ms.level {
		if i != 0 {
			ms.error("invalid capture index")
		}
		return ms.v.substring(ms.src, s, e)
	}
	c := ms.capture[i]
	switch c.len {
	case capUnfinished:
		ms.error("unfinished capture")
	case capPosition:
		return lua.LNumber(c.init + 1)
	}
	return ms.v.substring(ms.src, c.init, c.init+c.len)
}

// pushCaptures pushes the captures of the match src[s:e] (or, with wholeIfNone, the
// whole match when there are none) and returns how many it pushed.
func (ms *matchState) pushCaptures(s, e int, wholeIfNone bool) int {
	n := ms.level
	if n == 0 && wholeIfNone {
		n = 1
	}
	ms.v.reserve(int64(n))
	for i := 0; i < n; i++ {
		ms.v.L.Push(ms.captureValue(i, s, e))
	}
	return n
}
