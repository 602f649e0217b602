package runcwrap

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Call is what a runc command line asks for, as far as the wrapper needs
// to know.
type Call struct {
	// Command is runc's command ("create", "start", "kill", ...), empty
	// for `runc --version` and the like.
	Command string
	// Bundle and ID: for create, the bundle directory (absolute) and the
	// container id.
	Bundle, ID string
	// Log and LogFormat are runc's --log and --log-format: the containerd
	// shim reads the last error from that file.
	Log, LogFormat string
}

// Create reports whether c is `runc create`.
func (c Call) Create() bool { return c.Command == "create" }

// runc's global options (runc 1.0–1.2, urfave/cli): those that take a
// value, and the booleans. runc refuses any other, so the wrapper does too
// rather than guess where the command is.
var (
	globalValue = map[string]bool{"log": true, "log-format": true, "root": true, "criu": true, "rootless": true}
	globalBool  = map[string]bool{"debug": true, "systemd-cgroup": true, "help": true, "h": true, "version": true, "v": true}
	createValue = map[string]bool{"bundle": true, "b": true, "console-socket": true, "pid-file": true, "preserve-fds": true}
	createBool  = map[string]bool{"no-pivot": true, "no-new-keyring": true, "help": true, "h": true}
)

// maxArgs bounds a command line (the shim passes about ten).
const maxArgs = 256

// Parse reads a runc command line (without argv[0]); cwd resolves a
// relative bundle (runc's default bundle is its working directory).
// On error the Call holds what was read (runc's log, for the error).
// Options are Go flag syntax: -name or --name, a value as the next
// argument or after '='. Errors name the argument.
func Parse(args []string, cwd string) (Call, error) {
	if len(args) > maxArgs {
		return Call{}, fmt.Errorf("%d arguments, at most %d", len(args), maxArgs)
	}
	var c Call
	i := 0
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i++
			break
		}
		name, val, hasVal, ok := option(a)
		if !ok {
			break // the command
		}
		switch {
		case globalValue[name]:
			if !hasVal {
				if i+1 >= len(args) {
					return c, fmt.Errorf("runc option %q: missing its value", a)
				}
				i++
				val = args[i]
			}
			switch name {
			case "log":
				c.Log = val
			case "log-format":
				c.LogFormat = val
			}
		case globalBool[name]:
		default:
			return c, fmt.Errorf("unknown runc option %q before the command", clip(a))
		}
	}
	if i >= len(args) {
		return c, nil
	}
	c.Command = args[i]
	if !c.Create() {
		return c, nil
	}
	// urfave/cli moves options that follow the container id before it, so
	// every option counts wherever it is, up to a "--".
	var pos []string
	for j := i + 1; j < len(args); j++ {
		a := args[j]
		if a == "--" {
			pos = append(pos, args[j+1:]...)
			break
		}
		name, val, hasVal, ok := option(a)
		if !ok {
			pos = append(pos, a)
			continue
		}
		switch {
		case createValue[name]:
			if !hasVal {
				if j+1 >= len(args) {
					return c, fmt.Errorf("runc create option %q: missing its value", a)
				}
				j++
				val = args[j]
			}
			if name == "bundle" || name == "b" {
				c.Bundle = val
			}
		case createBool[name]:
		default:
			return c, fmt.Errorf("unknown runc create option %q", clip(a))
		}
	}
	if len(pos) != 1 || pos[0] == "" {
		return c, fmt.Errorf("runc create: want one container id, got %d arguments", len(pos))
	}
	c.ID = pos[0]
	if c.Bundle == "" {
		c.Bundle = cwd
	}
	if c.Bundle == "" {
		return c, fmt.Errorf("runc create: no bundle and no working directory")
	}
	if !filepath.IsAbs(c.Bundle) {
		c.Bundle = filepath.Join(cwd, c.Bundle)
	}
	c.Bundle = filepath.Clean(c.Bundle)
	return c, nil
}

// option splits "-name", "--name" and "--name=value"; ok is false for an
// argument that is not an option ("-" alone, or no leading dash).
func option(a string) (name, val string, hasVal, ok bool) {
	if len(a) < 2 || a[0] != '-' {
		return "", "", false, false
	}
	s := strings.TrimPrefix(a[1:], "-")
	if s == "" || s[0] == '-' || s[0] == '=' {
		return "", "", false, false
	}
	name, val, hasVal = strings.Cut(s, "=")
	return name, val, hasVal, true
}

// clip bounds text from the caller in errors.
func clip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
