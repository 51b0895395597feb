package speaker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Role is the part a peer plays in a CoderVPN session. The manager is the host
// application (Coder Desktop, the NetworkExtension, our CLI); the tunnel is the
// side that runs the network engine. Each side announces its role in the
// handshake and checks that the peer announced the other one, so two tunnels
// wired to each other by mistake fail at once instead of waiting forever.
type Role string

const (
	// RoleManager is the host side: it sends ManagerMessages.
	RoleManager Role = "manager"
	// RoleTunnel is the engine side: it sends TunnelMessages.
	RoleTunnel Role = "tunnel"
	// RoleClient is a program driving the service that owns the tunnel
	// (codervpn up/down/status; Coder Desktop's app on Windows): it sends
	// ClientMessages.
	RoleClient Role = "client"
	// RoleService is the service that owns the tunnel and answers clients:
	// it sends ServiceMessages.
	RoleService Role = "service"
)

// clientService reports whether r is a role of the client/service leg.
func (r Role) clientService() bool { return r == RoleClient || r == RoleService }

// other returns the role the peer must announce.
func (r Role) other() Role {
	switch r {
	case RoleManager:
		return RoleTunnel
	case RoleTunnel:
		return RoleManager
	case RoleClient:
		return RoleService
	default:
		return RoleClient
	}
}

const (
	headerPreamble = "codervpn"
	// maxHeaderLen is the most bytes a peer's header may have before its '\n'.
	maxHeaderLen = 255
)

// HandshakeError reports a peer header we could not accept. Header is the
// peer's line as received (without the newline), so that the person reading
// the error sees exactly what the other program sent.
type HandshakeError struct {
	Header string
	Err    error
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("invalid CoderVPN handshake header from peer %q: %v", e.Header, e.Err)
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// headerLine is the line a peer with this role and versions sends.
func headerLine(role Role, versions []Version) string {
	return headerPreamble + " " + string(role) + " " + formatVersionList(versions) + "\n"
}

// readHeaderLine reads the peer's header one byte at a time, so that not a
// single byte of the first frame (which may follow in the same write) is
// consumed. It returns the line without its '\n'.
func readHeaderLine(r io.Reader) (string, error) {
	var buf [maxHeaderLen + 1]byte
	for n := 0; n < len(buf); n++ {
		if _, err := io.ReadFull(r, buf[n:n+1]); err != nil {
			if errors.Is(err, io.EOF) {
				if n == 0 {
					return "", fmt.Errorf("peer closed the connection before sending its handshake header: %w", err)
				}
				return "", &HandshakeError{
					Header: string(buf[:n]),
					Err:    fmt.Errorf("peer closed the connection after %d bytes, before the header's newline: %w", n, io.ErrUnexpectedEOF),
				}
			}
			return "", fmt.Errorf("read handshake header (after %d bytes): %w", n, err)
		}
		if buf[n] == '\n' {
			return string(buf[:n]), nil
		}
	}
	return "", &HandshakeError{
		Header: string(buf[:]),
		Err:    fmt.Errorf("no newline within the first %d bytes; a header is at most %d bytes", len(buf), maxHeaderLen),
	}
}

// parseHeader validates a peer's header line (without '\n') and returns the
// versions it offers. wantRole is the role the peer must have.
func parseHeader(line string, wantRole Role) ([]Version, error) {
	fail := func(format string, args ...any) ([]Version, error) {
		return nil, &HandshakeError{Header: line, Err: fmt.Errorf(format, args...)}
	}
	if len(line) > maxHeaderLen {
		return fail("header is %d bytes; the limit is %d", len(line), maxHeaderLen)
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '\r':
			return fail("carriage return at byte %d; the header must end with a bare \\n", i)
		case c == ' ':
		case c < 0x21 || c > 0x7e:
			return fail("byte 0x%02x at offset %d is not printable ASCII", c, i)
		}
	}
	fields := strings.Split(line, " ")
	if len(fields) != 3 || fields[0] == "" || fields[1] == "" || fields[2] == "" {
		return fail("want exactly %q separated by single spaces, got %d space-separated fields",
			headerPreamble+" <role> <versions>", len(fields))
	}
	if fields[0] != headerPreamble {
		return fail("preamble is %q, want %q (is the other end a CoderVPN peer?)", fields[0], headerPreamble)
	}
	switch role := Role(fields[1]); {
	case role == wantRole:
	case role == wantRole.other():
		return fail("peer announced role %q like us, want %q (both ends are the %s)", role, wantRole, role)
	default:
		return fail("unknown role %q, want %q", role, wantRole)
	}
	versions, err := ParseVersionList(fields[2])
	if err != nil {
		return nil, &HandshakeError{Header: line, Err: err}
	}
	return versions, nil
}

// handshake sends our header and reads the peer's at the same time (with
// unbuffered pipes, doing one after the other deadlocks when both peers write
// first), validates it and negotiates the version. If ctx ends or anything
// fails, it calls closeAll so that the blocked read or write returns, and
// waits for both goroutines before returning: it never leaves one behind.
func handshake(ctx context.Context, r io.Reader, w io.Writer, closeAll func(),
	me Role, ours []Version,
) (Version, error) {
	writeDone := make(chan error, 1)
	go func() {
		_, err := io.WriteString(w, headerLine(me, ours))
		writeDone <- err
	}()
	type readResult struct {
		line string
		err  error
	}
	readDone := make(chan readResult, 1)
	go func() {
		line, err := readHeaderLine(r)
		readDone <- readResult{line, err}
	}()

	var (
		wrote, read bool
		negotiated  Version
		failure     error
	)
	for failure == nil && !(wrote && read) {
		select {
		case err := <-writeDone:
			wrote = true
			if err != nil {
				failure = fmt.Errorf("write our handshake header: %w", err)
			}
		case res := <-readDone:
			read = true
			switch {
			case res.err != nil:
				failure = res.err
			default:
				theirs, err := parseHeader(res.line, me.other())
				if err != nil {
					failure = err
					break
				}
				negotiated, err = negotiateVersion(ours, theirs)
				if err != nil {
					failure = &HandshakeError{Header: res.line, Err: err}
				}
			}
		case <-ctx.Done():
			waiting := "the peer's header"
			if read {
				waiting = "the peer to read our header"
			}
			failure = fmt.Errorf("handshake: gave up waiting for %s: %w", waiting, context.Cause(ctx))
		}
	}
	if failure == nil {
		return negotiated, nil
	}
	closeAll()
	if !wrote {
		<-writeDone
	}
	if !read {
		<-readDone
	}
	return Version{}, failure
}
