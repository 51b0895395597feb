package profwindow

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Spec
	}{
		{"/tmp/p,8s,10s", Spec{Dir: "/tmp/p", Delay: 8 * time.Second, Window: 10 * time.Second, Trace: true, Heap: true}},
		{"/tmp/p,0s,1m,cpu", Spec{Dir: "/tmp/p", Window: time.Minute, CPU: true}},
		{"d,1s,2s,cpu+trace", Spec{Dir: "d", Delay: time.Second, Window: 2 * time.Second, CPU: true, Trace: true}},
	} {
		got, err := Parse(c.in)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "/tmp/p,8s", "/tmp/p,8,10s", "/tmp/p,8s,0s", ",1s,1s", "/tmp/p,1s,1s,mutex", "/tmp/p,1s,1s,cpu,x", "/tmp/p,-1s,1s"} {
		if s, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) = %+v, want an error", bad, s)
		}
	}
}

// TestRecordCPU records a CPU profile over a short window while the test
// burns CPU, and checks that the profile holds the burner's samples.
func TestRecordCPU(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{Dir: dir, Window: 300 * time.Millisecond, CPU: true}
	done := make(chan error, 1)
	go func() { done <- spec.Record(nil) }()
	stopBurn, burnt := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(burnt)
		burn(stopBurn)
	}()
	err := <-done
	close(stopBurn)
	<-burnt // the burner ends with the test
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "cpu.pprof"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, s := range p.Sample {
		for _, l := range s.Location {
			for _, ln := range l.Line {
				if ln.Function != nil && ln.Function.Name == "github.com/codervpn/codervpn/internal/profwindow.burn" {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("the CPU profile (%d samples) has no sample in burn", len(p.Sample))
	}
	for _, name := range []string{"trace.out", "heap.pprof"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err == nil {
			t.Errorf("%s written, but only cpu was asked for", name)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "goroutine.txt")); err != nil {
		t.Error(err)
	}
}

// TestRecordStopEarly: a close of stop ends the window long before its
// end, and the files are still written.
func TestRecordStopEarly(t *testing.T) {
	dir := t.TempDir()
	spec := Spec{Dir: dir, Window: time.Hour, Trace: true}
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- spec.Record(stop) }()
	// The window is open once the trace file exists.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(dir, "trace.out")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the trace never started")
		}
		time.Sleep(5 * time.Millisecond) // polling for the file, not settling
	}
	close(stop)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Record did not end when stopped")
	}
	st, err := os.Stat(filepath.Join(dir, "trace.out"))
	if err != nil || st.Size() == 0 {
		t.Errorf("trace.out after an early stop: %v, %v", st, err)
	}
}

// TestRecordStoppedBeforeWindow: stopped during the delay, nothing is
// recorded and Record says so.
func TestRecordStoppedBeforeWindow(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p")
	stop := make(chan struct{})
	close(stop)
	if err := (Spec{Dir: dir, Delay: time.Hour, Window: time.Second, CPU: true}).Record(stop); err == nil {
		t.Error("Record stopped in its delay returned no error")
	}
	if _, err := os.Stat(dir); err == nil {
		t.Error("the directory was made though nothing was recorded")
	}
}

//go:noinline
func burn(stop <-chan struct{}) {
	x := uint64(1)
	for {
		select {
		case <-stop:
			return
		default:
		}
		for i := 0; i < 1e5; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
		sink = x
	}
}

var sink uint64

// TestStart records the window an environment variable asks for, and the
// end it returns writes the files at once however long the window was
// meant to be; with the variable unset nothing is recorded.
func TestStart(t *testing.T) {
	const env = "PROFWINDOW_TEST_PROFILE"
	t.Setenv(env, "")
	end, err := Start(env)
	if err != nil {
		t.Fatalf("unset: %v", err)
	}
	end()

	t.Setenv(env, "/tmp,1s")
	if _, err := Start(env); err == nil {
		t.Fatal("a malformed window was accepted")
	}

	dir := t.TempDir()
	t.Setenv(env, dir+",0s,1h,cpu")
	end, err = Start(env)
	if err != nil {
		t.Fatal(err)
	}
	end()
	end() // a second end only waits, as a second stop would
	for _, name := range []string{"cpu.pprof", "goroutine.txt"} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Size() == 0 {
			t.Errorf("%s after end: %v", name, err)
		}
	}
}
