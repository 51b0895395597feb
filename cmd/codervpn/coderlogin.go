package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// coderLogin is the login the Coder CLI saved with `coder login`.
type coderLogin struct {
	Dir, URL, Token string
}

// coderConfigDir is where the Coder CLI keeps its login, by its own rules
// (cli/config.DefaultDir and the CODER_CONFIG_DIR option):
// CODER_CONFIG_DIR, else $XDG_CONFIG_HOME/coderv2, else ~/.config/coderv2.
func coderConfigDir(getenv func(string) string) (string, error) {
	if d := getenv("CODER_CONFIG_DIR"); d != "" {
		return d, nil
	}
	if x := getenv("XDG_CONFIG_HOME"); x != "" {
		return filepath.Join(x, "coderv2"), nil
	}
	home := getenv("HOME")
	if home == "" {
		return "", errors.New("HOME is not set, so the Coder CLI's login cannot be found: " +
			"set CODER_CONFIG_DIR, or pass --url and --token")
	}
	return filepath.Join(home, ".config", "coderv2"), nil
}

// readCoderLogin reads the files `url` and `session` of the Coder CLI's
// config directory (the CLI trims them the same way). Each failure is one
// line saying what to do.
func readCoderLogin(getenv func(string) string) (coderLogin, error) {
	dir, err := coderConfigDir(getenv)
	if err != nil {
		return coderLogin{}, err
	}
	l := coderLogin{Dir: dir}
	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return "", nil
		case errors.Is(err, fs.ErrPermission):
			return "", fmt.Errorf("cannot read %s (permission denied): run codervpn as the user who ran `coder login`, or pass --url and --token",
				filepath.Join(dir, name))
		case err != nil:
			return "", fmt.Errorf("read the Coder CLI's login: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if l.URL, err = read("url"); err != nil {
		return l, err
	}
	if l.Token, err = read("session"); err != nil {
		return l, err
	}
	switch {
	case l.URL == "":
		return l, fmt.Errorf("no Coder login found in %s: run `coder login <url>` first, or pass --url and --token", dir)
	case l.Token == "":
		return l, fmt.Errorf("the Coder CLI in %s knows %s but holds no session: run `coder login %s` again, or pass --token",
			dir, l.URL, l.URL)
	}
	return l, nil
}
