package sink

import "strings"

// outlet hands a pipe's publishes, in order, from send to the goroutine
// that waits for their acknowledgements (the MQTT bridge's and JetStream's
// complete).
type outlet[T any] struct {
	queue  chan T
	closed chan struct{} // closed with queue, for a send blocked on flow control
	shut   bool
}

func newOutlet[T any](size int) outlet[T] {
	return outlet[T]{queue: make(chan T, size), closed: make(chan struct{})}
}

// close ends the queue; the completion goroutine drains what is in it.
func (o *outlet[T]) close() {
	if !o.shut {
		o.shut = true
		close(o.closed)
		close(o.queue)
	}
}

// perFunction fills in the {function} of a stream's topic or subject
// template, once per function.
type perFunction struct {
	tmpl  string
	clean func(string) string // makes a name one safe level or token
	cache map[string]string
}

func newPerFunction(tmpl string, clean func(string) string) perFunction {
	return perFunction{tmpl: tmpl, clean: clean, cache: make(map[string]string)}
}

func (f perFunction) get(function string) string {
	if s, ok := f.cache[function]; ok {
		return s
	}
	s := strings.ReplaceAll(f.tmpl, "{function}", f.clean(function))
	f.cache[function] = s
	return s
}
