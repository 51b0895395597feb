package vpnlib

import (
	"fmt"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// Bounds on a StartRequest's strings. Everything in a StartRequest ends up
// in HTTP headers (which servers and proxies cap at 8-64 KiB in all) and in
// the log redactor, whose cost grows with the secrets' length; a value far
// beyond these is a broken or hostile manager, and is refused with a message
// naming the field rather than sent or processed. Coder's API tokens are 33
// characters; identity-aware proxies' headers are a few KiB.
const (
	maxStartURLLen     = 8 << 10
	maxStartTokenLen   = 16 << 10
	maxStartHeaderLen  = 16 << 10 // one header's name or value
	maxStartHeaders    = 256
	maxStartHeaderSum  = 64 << 10 // every header's name and value together
	maxStartDeviceInfo = 1 << 10  // device id, OS, desktop version
)

// checkStartSizes refuses a StartRequest whose strings are absurdly long.
// It runs before anything else looks at the request.
func checkStartSizes(req *vpnpb.StartRequest) error {
	tooLong := func(field string, n, limit int) error {
		return fmt.Errorf("StartRequest.%s is %d bytes long; the limit is %d", field, n, limit)
	}
	if n := len(req.GetCoderUrl()); n > maxStartURLLen {
		return tooLong("coder_url", n, maxStartURLLen)
	}
	if n := len(req.GetApiToken()); n > maxStartTokenLen {
		return tooLong("api_token", n, maxStartTokenLen)
	}
	if n := len(req.GetHeaders()); n > maxStartHeaders {
		return fmt.Errorf("StartRequest.headers has %d entries; the limit is %d", n, maxStartHeaders)
	}
	sum := 0
	for i, h := range req.GetHeaders() {
		if n := len(h.GetName()); n > maxStartHeaderLen {
			return tooLong(fmt.Sprintf("headers[%d].name", i), n, maxStartHeaderLen)
		}
		if n := len(h.GetValue()); n > maxStartHeaderLen {
			return tooLong(fmt.Sprintf("headers[%d].value", i), n, maxStartHeaderLen)
		}
		sum += len(h.GetName()) + len(h.GetValue())
	}
	if sum > maxStartHeaderSum {
		return fmt.Errorf("StartRequest.headers add up to %d bytes; the limit is %d", sum, maxStartHeaderSum)
	}
	for field, v := range map[string]string{
		"device_id": req.GetDeviceId(), "device_os": req.GetDeviceOs(), "coder_desktop_version": req.GetCoderDesktopVersion(),
	} {
		if len(v) > maxStartDeviceInfo {
			return tooLong(field, len(v), maxStartDeviceInfo)
		}
	}
	return nil
}
