package dlhost

import (
	"fmt"
	"os"
	"strconv"
)

// SetMemoryLimit calls coderSetMemoryLimit(bytes) in the host and returns
// its result: the previous limit, or a negative code.
func (h *Host) SetMemoryLimit(bytes int64) (int64, error) {
	out, err := h.Call(fmt.Sprintf("memlimit %d", bytes))
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseInt(out, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("coderSetMemoryLimit result %q: %w", out, err)
	}
	return v, nil
}

// SetLogger calls coderSetLogger with the C host's callback, which writes
// each record to w (the host gets its own fd) as a line "LEVEL MESSAGE",
// newlines in MESSAGE escaped as \n. With hold, every call of the callback
// waits until ReleaseLogger, as a callback that does not keep up would.
func (h *Host) SetLogger(minLevel int32, w *os.File, hold bool) (int32, error) {
	cmd := fmt.Sprintf("logger %d fd", minLevel)
	if hold {
		cmd += " hold"
	}
	out, err := h.Call(cmd, w)
	if err != nil {
		return 0, err
	}
	return parseRC(out)
}

// ReleaseLogger lets the callbacks SetLogger's hold keeps waiting return.
func (h *Host) ReleaseLogger() error {
	_, err := h.Call("logger release")
	return err
}

// LoggerOff calls coderSetLogger(NULL, NULL, 0): once it returns the
// callback has returned for good, and the host closes its fd for records.
func (h *Host) LoggerOff() (int32, error) {
	out, err := h.Call("logger off")
	if err != nil {
		return 0, err
	}
	return parseRC(out)
}

// SetCrashOutput calls coderSetCrashOutput with fd: an *os.File (attached,
// and closed by the host right after the call, which the library allows) or
// an int passed as is.
func (h *Host) SetCrashOutput(fd any) (int32, error) {
	var out string
	var err error
	switch v := fd.(type) {
	case *os.File:
		out, err = h.Call("crashout fd", v)
	case int:
		out, err = h.Call(fmt.Sprintf("crashout %d", v))
	default:
		return 0, fmt.Errorf("SetCrashOutput argument of type %T", fd)
	}
	if err != nil {
		return 0, err
	}
	return parseRC(out)
}

// TestLog calls coderTestLog(n) of a library built with the
// codervpn_testexports tag: n records through the tunnels' logger.
func (h *Host) TestLog(n int) error {
	_, err := h.Call(fmt.Sprintf("testlog %d", n))
	return err
}

// TestCrash calls coderTestCrash of a library built with the
// codervpn_testexports tag: a goroutine of the library panics and the host
// process dies. The reply may or may not arrive first; wait on Exited.
func (h *Host) TestCrash() {
	_, _ = h.Call("testcrash")
}
