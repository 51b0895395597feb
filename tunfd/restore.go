package tunfd

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// blockingRestore holds a dup of the caller's fd, kept when that fd was in
// blocking mode; the zero value holds none. Our devices switch the open
// file they share with the caller to non-blocking (O_NONBLOCK belongs to
// the open file, not to one descriptor), so Close uses the dup, outside
// any poller, to put it back the way the caller handed it over.
type blockingRestore struct {
	dup  int
	kept bool
}

// keepBlocking returns a blockingRestore for fd, whose file status flags are
// flags: with a dup if fd is in blocking mode, else empty.
func keepBlocking(fd, flags int) (blockingRestore, error) {
	if flags&unix.O_NONBLOCK != 0 {
		return blockingRestore{}, nil
	}
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return blockingRestore{}, fmt.Errorf("tunfd: dup fd %d: %w", fd, err)
	}
	return blockingRestore{dup: dup, kept: true}, nil
}

// restore puts the shared file back in blocking mode and closes the dup;
// later calls do nothing.
func (r *blockingRestore) restore() {
	if !r.kept {
		return
	}
	_ = unix.SetNonblock(r.dup, false)
	_ = unix.Close(r.dup)
	*r = blockingRestore{}
}
