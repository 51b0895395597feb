package service

import (
	"errors"
	"fmt"
	"net"
	"os/user"
	"slices"
	"strconv"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Group is the Unix group whose members may drive the service.
type Group struct {
	Name string
	GID  int
}

// LookupGroup finds the group name; a missing group is an error that says
// how to create it.
func LookupGroup(name string) (Group, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return Group{}, fmt.Errorf("group %q does not exist: create it with `sudo groupadd --system %s` "+
			"(the package's sysusers file does so) and add users with `sudo usermod -aG %s <user>`", name, name, name)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return Group{}, fmt.Errorf("group %q has a non-numeric id %q", name, g.Gid)
	}
	return Group{Name: name, GID: gid}, nil
}

// Peer is who is at the other end of a Unix socket, as the kernel says.
type Peer struct {
	PID, UID, GID int
	Groups        []int // supplementary groups at connect time
}

// PeerOf reads the peer's credentials (SO_PEERCRED) and supplementary
// groups (SO_PEERGROUPS, Linux 4.13+), both recorded by the kernel when the
// peer connected, so a peer cannot change them afterwards.
func PeerOf(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, fmt.Errorf("not a Unix socket connection (%T)", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, fmt.Errorf("read the peer's credentials: %w", err)
	}
	var (
		p    Peer
		oerr error
	)
	err = raw.Control(func(fd uintptr) {
		cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err != nil {
			oerr = fmt.Errorf("SO_PEERCRED: %w", err)
			return
		}
		p = Peer{PID: int(cred.Pid), UID: int(cred.Uid), GID: int(cred.Gid)}
		p.Groups, oerr = peerGroups(int(fd))
	})
	if err == nil {
		err = oerr
	}
	return p, err
}

// peerGroups is getsockopt(SO_PEERGROUPS): an array of gid_t, which
// x/sys/unix has no wrapper for. ERANGE says how much room it needs.
func peerGroups(fd int) ([]int, error) {
	n := 64
	for range 4 {
		buf := make([]uint32, n)
		size := uint32(4 * n)
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		if e == syscall.ERANGE {
			n = int(size/4) + 1
			continue
		}
		if e != 0 {
			return nil, fmt.Errorf("SO_PEERGROUPS: %w", e)
		}
		out := make([]int, 0, size/4)
		for _, g := range buf[:size/4] {
			out = append(out, int(g))
		}
		return out, nil
	}
	return nil, errors.New("SO_PEERGROUPS: the group list kept growing")
}

// Allowed reports whether p may drive the service: root, or g is its
// primary or a supplementary group.
func (p Peer) Allowed(g Group) bool {
	return p.UID == 0 || p.GID == g.GID || slices.Contains(p.Groups, g.GID)
}

// CheckPeer is the default Config.CheckPeer: nil for root and members of
// g, otherwise the one line the client prints.
func CheckPeer(c net.Conn, g Group) error {
	p, err := PeerOf(c)
	if err != nil {
		return fmt.Errorf("cannot tell who you are (%v)", err)
	}
	if p.Allowed(g) {
		return nil
	}
	return refusal(p.UID, g)
}

// refusal names the group and the fix for uid.
func refusal(uid int, g Group) error {
	name := strconv.Itoa(uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	return fmt.Errorf("user %s is not in group %s; an administrator can run `sudo usermod -aG %s %s` "+
		"(then log in again)", name, g.Name, g.Name, name)
}
