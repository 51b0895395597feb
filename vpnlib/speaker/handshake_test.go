package speaker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseHeader(t *testing.T) {
	t.Parallel()
	longList := "1.0" + strings.Repeat("0", maxHeaderLen-len("codervpn manager 1.0")) // exactly 255 bytes
	tests := []struct {
		name     string
		header   string // without '\n'
		wantRole Role
		want     []Version
		wantErr  string
	}{
		{name: "manager 1.3", header: "codervpn manager 1.3", wantRole: RoleManager, want: []Version{{1, 3}}},
		{name: "tunnel 1.3", header: "codervpn tunnel 1.3", wantRole: RoleTunnel, want: []Version{{1, 3}}},
		{name: "list", header: "codervpn tunnel 1.0,2.1,5.0", wantRole: RoleTunnel, want: []Version{{1, 0}, {2, 1}, {5, 0}}},
		{name: "255 bytes", header: "codervpn manager " + longList, wantRole: RoleManager,
			want: []Version{{1, 0}}},
		{name: "256 bytes", header: "codervpn manager " + longList + "0", wantRole: RoleManager,
			wantErr: "header is 256 bytes; the limit is 255"},
		{name: "wrong preamble", header: "coderVPN manager 1.3", wantRole: RoleManager, wantErr: `preamble is "coderVPN", want "codervpn"`},
		{name: "http", header: "GET / HTTP/1.1", wantRole: RoleManager, wantErr: `preamble is "GET"`},
		{name: "same role as ours", header: "codervpn tunnel 1.3", wantRole: RoleManager,
			wantErr: `peer announced role "tunnel" like us, want "manager"`},
		{name: "unknown role", header: "codervpn client 1.3", wantRole: RoleTunnel, wantErr: `unknown role "client", want "tunnel"`},
		{name: "role wrong case", header: "codervpn Manager 1.3", wantRole: RoleManager, wantErr: `unknown role "Manager"`},
		{name: "unsorted", header: "codervpn manager 2.0,1.3", wantRole: RoleManager, wantErr: "not in ascending order"},
		{name: "duplicate major", header: "codervpn manager 1.1,1.3", wantRole: RoleManager, wantErr: "major version 1 appears twice"},
		{name: "major zero", header: "codervpn manager 0.1", wantRole: RoleManager, wantErr: "major version 0"},
		{name: "empty list", header: "codervpn manager ", wantRole: RoleManager, wantErr: "separated by single spaces"},
		{name: "missing list", header: "codervpn manager", wantRole: RoleManager, wantErr: "got 2 space-separated fields"},
		{name: "empty", header: "", wantRole: RoleManager, wantErr: "got 1 space-separated fields"},
		{name: "space in list", header: "codervpn manager 1.3, 2.0", wantRole: RoleManager, wantErr: "got 4 space-separated fields"},
		{name: "double space", header: "codervpn  manager 1.3", wantRole: RoleManager, wantErr: "separated by single spaces"},
		{name: "leading space", header: " codervpn manager 1.3", wantRole: RoleManager, wantErr: "separated by single spaces"},
		{name: "trailing space", header: "codervpn manager 1.3 ", wantRole: RoleManager, wantErr: "separated by single spaces"},
		{name: "CR", header: "codervpn manager 1.3\r", wantRole: RoleManager, wantErr: "carriage return at byte 20"},
		{name: "tab", header: "codervpn\tmanager 1.3", wantRole: RoleManager, wantErr: "byte 0x09 at offset 8 is not printable"},
		{name: "NUL", header: "codervpn manager 1.3\x00", wantRole: RoleManager, wantErr: "byte 0x00"},
		{name: "UTF-8", header: "codervpn manager 1.3é", wantRole: RoleManager, wantErr: "byte 0xc3"},
		{name: "non-numeric", header: "codervpn manager one.three", wantRole: RoleManager, wantErr: "not a decimal number"},
		{name: "version without minor", header: "codervpn manager 1", wantRole: RoleManager, wantErr: "not of the form major.minor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := parseHeader(tt.header, tt.wantRole)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("parseHeader(%q): %v", tt.header, err)
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("parseHeader(%q) = %v, want %v", tt.header, got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("parseHeader(%q) = %v, want error containing %q", tt.header, got, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("parseHeader(%q) error:\n  %v\nwant it to contain %q", tt.header, err, tt.wantErr)
			}
			// The user must see what the peer actually sent.
			var he *HandshakeError
			if !errors.As(err, &he) || he.Header != tt.header {
				t.Fatalf("error %v is not a *HandshakeError carrying the header %q", err, tt.header)
			}
			if !strings.Contains(err.Error(), strconv.Quote(tt.header)) {
				t.Fatalf("error %q does not quote the peer's header %q", err, tt.header)
			}
		})
	}
}

func TestReadHeaderLine(t *testing.T) {
	t.Parallel()
	header255 := strings.Repeat("x", maxHeaderLen)
	tests := []struct {
		name     string
		input    string
		want     string
		wantErr  string
		wantRest string // bytes that must still be unread afterwards
	}{
		{name: "stops at newline", input: "codervpn tunnel 1.3\n\x00\x00\x00\x02\x0a\x00", want: "codervpn tunnel 1.3", wantRest: "\x00\x00\x00\x02\x0a\x00"},
		{name: "second line untouched", input: "a\nb\n", want: "a", wantRest: "b\n"},
		{name: "255 bytes then newline", input: header255 + "\nrest", want: header255, wantRest: "rest"},
		{name: "256 bytes without newline", input: header255 + "yz\n", wantErr: "no newline within the first 256 bytes", wantRest: "z\n"},
		{name: "EOF before anything", input: "", wantErr: "before sending its handshake header: EOF"},
		{name: "EOF mid header", input: "codervpn tun", wantErr: `"codervpn tun": peer closed the connection after 12 bytes`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := strings.NewReader(tt.input)
			got, err := readHeaderLine(r)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("readHeaderLine = %q, %v; want error containing %q", got, err, tt.wantErr)
				}
			} else if err != nil || got != tt.want {
				t.Fatalf("readHeaderLine = %q, %v; want %q", got, err, tt.want)
			}
			rest, _ := io.ReadAll(r)
			if string(rest) != tt.wantRest {
				t.Fatalf("left unread %q, want %q (the header reader must never read past the newline)", rest, tt.wantRest)
			}
		})
	}
}

// pipePair returns two connected ends, each a read side and a write side, built
// from two os.Pipes: what a host hands the library.
type pipeEnd struct {
	r *os.File
	w *os.File
}

func newPipePair(t *testing.T) (a, b pipeEnd) {
	t.Helper()
	ar, bw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	br, aw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, f := range []*os.File{ar, aw, br, bw} {
			_ = f.Close()
		}
	})
	return pipeEnd{r: ar, w: aw}, pipeEnd{r: br, w: bw}
}

func (p pipeEnd) close() {
	_ = p.r.Close()
	_ = p.w.Close()
}

func TestHandshakeBothSides(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		manager, tunnl []Version
		want           Version
	}{
		{name: "current", manager: []Version{CurrentVersion}, tunnl: []Version{CurrentVersion}, want: Version{1, 3}},
		{name: "old manager", manager: []Version{{1, 0}}, tunnl: []Version{{1, 3}}, want: Version{1, 0}},
		{name: "future manager", manager: []Version{{1, 9}, {2, 0}}, tunnl: []Version{{1, 3}}, want: Version{1, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// io.Pipe is unbuffered: a handshake that wrote before reading
			// (on both sides) would deadlock here.
			m2tR, m2tW := io.Pipe()
			t2mR, t2mW := io.Pipe()
			closeAll := func() {
				_ = m2tR.Close()
				_ = t2mR.Close()
			}
			defer closeAll()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			type res struct {
				v   Version
				err error
			}
			tunnelRes := make(chan res, 1)
			go func() {
				v, err := handshake(ctx, m2tR, t2mW, closeAll, RoleTunnel, tt.tunnl)
				tunnelRes <- res{v, err}
			}()
			mv, merr := handshake(ctx, t2mR, m2tW, closeAll, RoleManager, tt.manager)
			tr := <-tunnelRes
			if merr != nil || tr.err != nil {
				t.Fatalf("handshake errors: manager %v, tunnel %v", merr, tr.err)
			}
			if mv != tt.want || tr.v != tt.want {
				t.Fatalf("negotiated manager %v tunnel %v, want %v", mv, tr.v, tt.want)
			}
		})
	}
}

func TestHandshakeFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		peerSays string
		wantErr  string
	}{
		{name: "incompatible major", peerSays: "codervpn manager 2.0\n",
			wantErr: `invalid CoderVPN handshake header from peer "codervpn manager 2.0": no common major version: we speak 1.3, peer speaks 2.0`},
		{name: "wrong role", peerSays: "codervpn tunnel 1.3\n", wantErr: `"codervpn tunnel 1.3": peer announced role "tunnel" like us`},
		{name: "peer closes", peerSays: "", wantErr: "peer closed the connection before sending its handshake header"},
		{name: "too long", peerSays: strings.Repeat("a", 300), wantErr: "no newline within the first 256 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			us, peer := newPipePair(t)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			go func() {
				_, _ = peer.w.WriteString(tt.peerSays)
				_ = peer.w.Close()
			}()
			_, err := handshake(ctx, us.r, us.w, us.close, RoleTunnel, []Version{CurrentVersion})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("handshake error %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestHandshakeContextBoundsSilentPeer(t *testing.T) {
	t.Parallel()
	us, peer := newPipePair(t)
	_ = peer // the peer never writes its header
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := handshake(ctx, us.r, us.w, us.close, RoleTunnel, []Version{CurrentVersion})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "gave up waiting for the peer's header") {
		t.Fatalf("handshake error %v, want deadline exceeded waiting for the peer's header", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("handshake took %v to give up after a 50ms deadline", d)
	}
	// We wrote our header before giving up; the peer can read exactly it.
	got, err := io.ReadAll(peer.r)
	if err != nil || !bytes.Equal(got, []byte("codervpn tunnel 1.3\n")) {
		t.Fatalf("peer read %q, %v; want our header then EOF", got, err)
	}
}
