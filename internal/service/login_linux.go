package service

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	vpnpb "github.com/codervpn/codervpn/proto"
)

// loginFile is the name of the saved login in the state directory.
const loginFile = "login.json"

// Login is what the service keeps of a StartRequest to reconnect with.
type Login struct {
	URL     string   `json:"url"`
	Token   string   `json:"token"`
	Headers []Header `json:"headers,omitempty"`
}

// Header is an extra HTTP header of a Login.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// loginOf takes the login out of a client's StartRequest.
func loginOf(req *vpnpb.StartRequest) *Login {
	l := &Login{URL: req.GetCoderUrl(), Token: req.GetApiToken()}
	for _, h := range req.GetHeaders() {
		l.Headers = append(l.Headers, Header{Name: h.GetName(), Value: h.GetValue()})
	}
	return l
}

// request is the StartRequest a tunnel gets for this login.
func (l *Login) request() *vpnpb.StartRequest {
	req := &vpnpb.StartRequest{CoderUrl: l.URL, ApiToken: l.Token, DeviceOs: "Linux"}
	for _, h := range l.Headers {
		req.Headers = append(req.Headers, &vpnpb.StartRequest_Header{Name: h.Name, Value: h.Value})
	}
	return req
}

// equal reports whether l and o are the same login.
func (l *Login) equal(o *Login) bool {
	return l != nil && o != nil && l.URL == o.URL && l.Token == o.Token && slices.Equal(l.Headers, o.Headers)
}

// secrets are the strings that must never leave the service.
func (l *Login) secrets() []string {
	if l == nil {
		return nil
	}
	s := []string{l.Token}
	for _, h := range l.Headers {
		s = append(s, h.Value)
	}
	return s
}

// Redact replaces every secret in s (ignoring empty and very short ones,
// which would mangle ordinary words) with "<redacted>".
func Redact(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) >= 4 {
			s = strings.ReplaceAll(s, sec, "<redacted>")
		}
	}
	return s
}

// saveLogin writes l to dir/login.json, 0600, atomically: a crash leaves
// the old file or the new one, never half of one.
func saveLogin(dir string, l *Login) error {
	data, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("encode the login: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the state directory %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".login-*.json")
	if err != nil {
		return fmt.Errorf("save the login in %s: %w", dir, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	// CreateTemp makes it 0600 already; say so for the reader.
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("save the login: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("save the login: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("save the login: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("save the login: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, loginFile)); err != nil {
		return fmt.Errorf("save the login: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// loadLogin reads dir/login.json; (nil, nil) when there is none.
func loadLogin(dir string) (*Login, error) {
	data, err := os.ReadFile(filepath.Join(dir, loginFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the saved login: %w", err)
	}
	var l Login
	if err := json.Unmarshal(data, &l); err != nil || l.URL == "" || l.Token == "" {
		return nil, fmt.Errorf("the saved login %s is damaged; run `codervpn up --persist` again", filepath.Join(dir, loginFile))
	}
	return &l, nil
}

// deleteLogin removes dir/login.json, if there is one.
func deleteLogin(dir string) error {
	err := os.Remove(filepath.Join(dir, loginFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete the saved login: %w", err)
	}
	return nil
}
