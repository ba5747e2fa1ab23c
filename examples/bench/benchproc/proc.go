// Package benchproc runs the child processes of the benchmarks (the gateway, Mosquitto,
// device simulators) and reads what they cost from /proc.
package benchproc

import (
	"bufio"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is a child process of a benchmark.
type Proc struct {
	Cmd  *exec.Cmd
	name string
	log  string
}

// Start runs argv in dir, its output in dir/NAME.log.
func Start(dir, name string, argv ...string) (*Proc, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, f, f
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return &Proc{Cmd: cmd, name: name, log: logPath}, nil
}

// Stop kills the process and waits for it.
func (p *Proc) Stop() {
	p.Cmd.Process.Kill()
	p.Cmd.Wait()
}

// Term stops the process cleanly (SIGTERM) and waits up to timeout for it to exit, then
// kills it.
func (p *Proc) Term(timeout time.Duration) error {
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop %s: %w", p.name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.Cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			return fmt.Errorf("%s: %w\n%s", p.name, err, p.Tail())
		}
		return nil
	case <-time.After(timeout):
		p.Cmd.Process.Kill()
		<-exited
		return fmt.Errorf("%s did not stop within %s:\n%s", p.name, timeout, p.Tail())
	}
}

// Tail is the end of the process's log.
func (p *Proc) Tail() string {
	b, _ := os.ReadFile(p.log)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// CPU is the process's user and system time so far, from /proc (clock ticks of 10 ms).
func (p *Proc) CPU() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.Cmd.Process.Pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses and may hold spaces.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// PeakRSS is the process's VmHWM.
func (p *Proc) PeakRSS() int64 { return p.status("VmHWM:") }

// RSS is the process's VmRSS: what it holds now.
func (p *Proc) RSS() int64 { return p.status("VmRSS:") }

// status reads a field in kB of /proc/PID/status, in bytes; 0 if the process is gone.
func (p *Proc) status(field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.Cmd.Process.Pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), field); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// FreeAddr is a 127.0.0.1 address no one listens on now.
func FreeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// WaitListening waits up to 20 s for p to listen on addr.
func WaitListening(p *Proc, addr string) error {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		if p.Cmd.ProcessState != nil {
			break
		}
	}
	return fmt.Errorf("%s did not listen on %s:\n%s", p.name, addr, p.Tail())
}

// Addrs hands out addresses as FreeAddr does, each at most once: a port given back by
// the kernel after FreeAddr closed it may come again, and two of a run's processes would
// then try to listen on it.
type Addrs struct{ given map[string]bool }

// Next is a free address not handed out before.
func (a *Addrs) Next() string {
	if a.given == nil {
		a.given = map[string]bool{}
	}
	for {
		if addr := FreeAddr(); !a.given[addr] {
			a.given[addr] = true
			return addr
		}
	}
}
