package coderd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"syscall"
)

// tlsProblem reports whether err is a TLS failure and, if so, a short
// description of it: an untrusted or mismatched certificate, or a server that
// does not speak TLS at all.
func tlsProblem(err error) (string, bool) {
	var (
		unknownCA  x509.UnknownAuthorityError
		hostname   x509.HostnameError
		invalid    x509.CertificateInvalidError
		verify     *tls.CertificateVerificationError
		record     tls.RecordHeaderError
		alert      tls.AlertError
		echRejects *tls.ECHRejectionError
	)
	switch {
	case errors.As(err, &unknownCA):
		return "the server's certificate is signed by an unknown authority", true
	case errors.As(err, &hostname):
		return "the server's certificate is not valid for " + hostname.Host, true
	case errors.As(err, &invalid):
		return "the server's certificate is invalid: " + invalid.Error(), true
	case errors.As(err, &verify):
		return "could not verify the server's certificate: " + verify.Err.Error(), true
	case errors.As(err, &record):
		return "the server did not answer with TLS (is the URL's scheme right?)", true
	case errors.As(err, &alert):
		return "the server ended the TLS handshake: " + alert.Error(), true
	case errors.As(err, &echRejects):
		return "the server rejected encrypted client hello", true
	}
	// net/http reports a plain-HTTP answer to a TLS hello as a string, and
	// some crypto/tls failures are plain strings too.
	s := err.Error()
	if strings.Contains(s, "server gave HTTP response to HTTPS client") {
		return "the server did not answer with TLS (is the URL's scheme right?)", true
	}
	if strings.Contains(s, "tls: ") {
		return s[strings.Index(s, "tls: "):], true
	}
	return "", false
}

// errorIsRefused reports a refused TCP connection.
func errorIsRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED)
}
