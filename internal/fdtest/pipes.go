package fdtest

import (
	"errors"
	"os"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// PausableReader lets a test make a manager stop reading: once paused, the
// next Read parks (announcing it on Parked) until the reader is closed.
type PausableReader struct {
	f      *os.File
	mu     sync.Mutex
	paused bool
	parked chan struct{}
	gone   chan struct{} // closed by Close
	once   sync.Once
}

// NewPausableReader reads f until Pause.
func NewPausableReader(f *os.File) *PausableReader {
	return &PausableReader{f: f, parked: make(chan struct{}), gone: make(chan struct{})}
}

func (p *PausableReader) Read(b []byte) (int, error) {
	p.mu.Lock()
	paused := p.paused
	p.mu.Unlock()
	if paused {
		select {
		case <-p.parked:
		default:
			close(p.parked)
		}
		<-p.gone
		return 0, os.ErrClosed
	}
	return p.f.Read(b)
}

// Pause makes the next Read park until Close.
func (p *PausableReader) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
}

// Parked is closed once a Read has parked.
func (p *PausableReader) Parked() <-chan struct{} { return p.parked }

// Close ends a parked Read and closes the file.
func (p *PausableReader) Close() error {
	p.once.Do(func() { close(p.gone) })
	return p.f.Close()
}

// FillPipe writes into w's pipe until it is full and returns how many bytes
// it wrote. It writes through a dup of w's fd, set non-blocking (which the
// dup shares with w): os.File.Fd would switch w itself to blocking mode.
func FillPipe(t testing.TB, w *os.File) int {
	t.Helper()
	raw, err := w.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	dup := -1
	if err := raw.Control(func(fd uintptr) { dup, err = unix.Dup(int(fd)) }); err != nil || dup < 0 {
		t.Fatalf("dup the pipe's write end: %v", err)
	}
	defer unix.Close(dup)
	if err := unix.SetNonblock(dup, true); err != nil {
		t.Fatalf("make the pipe's write end non-blocking: %v", err)
	}
	junk := make([]byte, 4096)
	total := 0
	for {
		n, err := unix.Write(dup, junk)
		if errors.Is(err, unix.EAGAIN) {
			return total
		}
		if err != nil {
			t.Fatalf("fill the pipe: %v", err)
		}
		total += n
	}
}
