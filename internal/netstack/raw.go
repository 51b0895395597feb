package netstack

import "fmt"

// WriteRaw writes b to the link as one datagram, as is: no utun header is
// added and nothing is checked. It is for tests that feed the other side
// (the tunnel) malformed frames the stack itself would never send. It is
// safe to call concurrently with the stack's own writes; each datagram
// arrives whole.
func (n *Stack) WriteRaw(b []byte) error {
	if _, err := n.file.Write(b); err != nil {
		return fmt.Errorf("write a raw datagram to the utun link: %w", err)
	}
	return nil
}
