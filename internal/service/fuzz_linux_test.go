package service

import (
	"net"
	"testing"
)

// FuzzClientBytes sends arbitrary bytes after a valid header; whatever they
// are, the service must survive, and another client must get its Status.
func FuzzClientBytes(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Add([]byte("\x00\x00\x00\x02\x0a\x00"))
	f.Add([]byte("\x00\x00\x00\x04\x0a\x02\x08\x01"))         // rpc msg_id 1, no kind
	f.Add([]byte("\x00\x00\x00\x06\x0a\x02\x08\x01\x22\x00")) // a StatusRequest
	f.Add([]byte("\x00\x00\x00\x06\x0a\x02\x08\x01\x1a\x00")) // a StopRequest
	ts := startService(f, newFakeBackend(), "")
	f.Fuzz(func(t *testing.T, data []byte) {
		conn, err := net.Dial("unix", ts.sock)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			_, _ = conn.Write(append([]byte("codervpn client 1.1\n"), data...))
			_ = conn.(*net.UnixConn).CloseWrite()
		}()
		buf := make([]byte, 4096)
		for {
			if _, err := conn.Read(buf); err != nil {
				break
			}
		}
		conn.Close()
		if st := dialClient(t, ts.sock).call(t, statusMsg).GetStatus(); st == nil {
			t.Fatal("no Status after the fuzz client")
		}
	})
}
