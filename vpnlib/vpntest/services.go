package vpntest

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"

	"cdr.dev/slog/v3"
	"github.com/coder/coder/v2/tailnet"
)

// MaxSourceBytes is the most a single source request (TCP or HTTP) may ask
// for: 1 TiB, far beyond any test, small enough to reject garbage.
const MaxSourceBytes = 1 << 40

// sourceRequestLen is the size of a source-port request: a big-endian uint64.
const sourceRequestLen = 8

// ParseSourceRequest decodes the 8-byte request a client sends to the source
// port: the big-endian number of bytes it wants.
func ParseSourceRequest(b []byte) (uint64, error) {
	if len(b) != sourceRequestLen {
		return 0, fmt.Errorf("source request must be %d bytes (a big-endian byte count), got %d", sourceRequestLen, len(b))
	}
	n := binary.BigEndian.Uint64(b)
	if n > MaxSourceBytes {
		return 0, fmt.Errorf("source request for %d bytes exceeds the %d-byte limit", n, uint64(MaxSourceBytes))
	}
	return n, nil
}

// parseByteCount reads the n parameter of GET /bytes?n=N.
func parseByteCount(s string) (uint64, error) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("n must be a decimal byte count: %w", err)
	}
	if n > MaxSourceBytes {
		return 0, fmt.Errorf("n=%d exceeds the %d-byte limit", n, uint64(MaxSourceBytes))
	}
	return n, nil
}

// services are an agent's TCP servers on its tailnet address.
type services struct {
	logger    slog.Logger
	listeners []net.Listener
	http      *http.Server
	wg        sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func startServices(conn *tailnet.Conn, a *Agent, logger slog.Logger) (*services, error) {
	s := &services{logger: logger, conns: map[net.Conn]struct{}{}}
	listen := func(port uint16) (net.Listener, error) {
		ln, err := conn.Listen("tcp", fmt.Sprintf(":%d", port))
		if err != nil {
			s.close()
			return nil, fmt.Errorf("listen on agent tailnet port %d: %w", port, err)
		}
		s.listeners = append(s.listeners, ln)
		return ln, nil
	}
	httpLn, err := listen(a.HTTPPort)
	if err != nil {
		return nil, err
	}
	sinkLn, err := listen(a.SinkPort)
	if err != nil {
		return nil, err
	}
	sourceLn, err := listen(a.SourcePort)
	if err != nil {
		return nil, err
	}

	s.http = &http.Server{
		Handler:  agentHTTPHandler(a),
		ErrorLog: log.New(slogWriter{logger}, "", 0),
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.wg.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.wg.Done()
			}
		},
	}
	s.wg.Add(3)
	go func() {
		defer s.wg.Done()
		_ = s.http.Serve(httpLn)
	}()
	go func() {
		defer s.wg.Done()
		s.acceptLoop(sinkLn, serveSink)
	}()
	go func() {
		defer s.wg.Done()
		s.acceptLoop(sourceLn, serveSource)
	}()
	return s, nil
}

func (s *services) acceptLoop(ln net.Listener, serve func(net.Conn) error) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			_ = c.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				_ = c.Close()
			}()
			if err := serve(c); err != nil && !errors.Is(err, net.ErrClosed) {
				s.logger.Debug(context.Background(), "agent service connection ended", slog.Error(err))
			}
		}()
	}
}

func (s *services) close() {
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		_ = c.Close()
	}
	s.mu.Unlock()
	for _, ln := range s.listeners {
		_ = ln.Close()
	}
	if s.http != nil {
		_ = s.http.Close()
	}
	s.wg.Wait()
}

// serveSink discards what it reads; at the client's EOF it answers with the
// big-endian uint64 count of bytes it received.
func serveSink(c net.Conn) error {
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		return fmt.Errorf("sink read: %w", err)
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	if _, err := c.Write(b[:]); err != nil {
		return fmt.Errorf("sink write count: %w", err)
	}
	return nil
}

// serveSource reads an 8-byte request and writes that many bytes, then
// closes the connection.
func serveSource(c net.Conn) error {
	var req [sourceRequestLen]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return fmt.Errorf("source read request: %w", err)
	}
	n, err := ParseSourceRequest(req[:])
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(c, 64<<10)
	if err := writePattern(bw, n); err != nil {
		return fmt.Errorf("source write: %w", err)
	}
	return bw.Flush()
}

var pattern = func() []byte {
	b := make([]byte, 32<<10)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}()

// writePattern writes n bytes of a repeating a..z pattern.
func writePattern(w io.Writer, n uint64) error {
	for n > 0 {
		chunk := pattern
		if n < uint64(len(chunk)) {
			chunk = chunk[:n]
		}
		if _, err := w.Write(chunk); err != nil {
			return err
		}
		n -= uint64(len(chunk))
	}
	return nil
}

// agentHTTPHandler serves GET / (a page naming the agent) and
// GET /bytes?n=N (N bytes, for HTTP throughput).
func agentHTTPHandler(a *Agent) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = fmt.Fprintf(w, "hello from agent %s (id %s, workspace %s)\n", a.Name, a.ID, a.WorkspaceID)
	})
	mux.HandleFunc("GET /bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := parseByteCount(r.URL.Query().Get("n"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatUint(n, 10))
		_ = writePattern(w, n)
	})
	return mux
}
