package hosttest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/netip"
)

// HTTPGet fetches path from an HTTP server at addr through the tunnel, over
// a fresh connection from the host's network stack, and returns the body.
// An answer other than 200 OK is an error. ctx bounds the whole exchange.
func (h *Host) HTTPGet(ctx context.Context, addr netip.AddrPort, path string) (string, error) {
	conn, err := h.DialTCP(ctx, addr)
	if err != nil {
		return "", fmt.Errorf("dial %v through the tunnel: %w", addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, addr); err != nil {
		return "", fmt.Errorf("send the request to %v: %w", addr, err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return "", fmt.Errorf("read the answer from %v: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("read the body from %v: %w", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("%v answered %s", addr, resp.Status)
	}
	return string(body), nil
}
