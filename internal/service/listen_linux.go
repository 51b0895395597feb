package service

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// DefaultSocket is where the service listens and clients look for it.
const DefaultSocket = "/run/codervpn/codervpn.sock"

// Listen creates the service's socket at path, mode 0660, owned by root
// and g (the group check is repeated per connection: CheckPeer). A stale
// socket left by a crash is replaced; a live one is an error, since two
// services would fight over the TUN.
func Listen(path string, g Group) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create the socket's directory: %w", err)
	}
	st, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("socket path %s: %w", path, err)
	case st.Mode()&fs.ModeSocket == 0:
		return nil, fmt.Errorf("%s exists and is not a socket; remove it or pass --socket", path)
	default:
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another codervpn service is listening on %s: stop it first (`sudo systemctl stop codervpn`)", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("check whether a service still listens on %s: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove the stale socket %s: %w", path, err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chown(path, 0, g.GID); err != nil && os.Geteuid() == 0 {
		l.Close()
		return nil, fmt.Errorf("give %s to group %s: %w", path, g.Name, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod 0660 %s: %w", path, err)
	}
	return l, nil
}
