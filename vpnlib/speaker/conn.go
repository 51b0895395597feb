package speaker

import (
	"io"
	"net"
	"sync"
)

// SplitConn gives a Speaker the two sides of one duplex connection (a Unix
// socket between the service and its clients). The Speaker closes its read
// and write sides independently; the connection itself is closed once, by
// whichever side closes first. Each side keeps the connection's methods, so
// write deadlines still apply.
func SplitConn(c net.Conn) (io.ReadCloser, io.WriteCloser) {
	once := new(sync.Once)
	return connSide{c, once}, connSide{c, once}
}

type connSide struct {
	net.Conn
	once *sync.Once
}

func (c connSide) Close() error {
	var err error
	c.once.Do(func() { err = c.Conn.Close() })
	return err
}
