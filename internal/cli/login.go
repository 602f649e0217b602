package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// The login session file: the session token on its first line, then
// comment lines ("# server: URL", "# user: ldap:alice", "# expires: T")
// that readTokenFile skips, so the file also works as --token-file.
const (
	sessionServer  = "# server: "
	sessionUser    = "# user: "
	sessionExpires = "# expires: "
)

// sessionPath is $XDG_CONFIG_HOME/coffer/token, else
// ~/.config/coffer/token (COFFER_SESSION_FILE overrides it, for tests).
func sessionPath() (string, error) {
	if p := os.Getenv("COFFER_SESSION_FILE"); p != "" {
		return p, nil
	}
	if x := os.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "coffer", "token"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no place for the session token: %w (set XDG_CONFIG_HOME)", err)
	}
	return filepath.Join(home, ".config", "coffer", "token"), nil
}

// session is a saved login.
type session struct {
	token, server, user string
	expires             time.Time
}

func readSession(path string) (session, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return session{}, err
	}
	defer clear(b)
	var s session
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case i == 0:
			s.token = line
		case strings.HasPrefix(line, sessionServer):
			s.server = strings.TrimPrefix(line, sessionServer)
		case strings.HasPrefix(line, sessionUser):
			s.user = strings.TrimPrefix(line, sessionUser)
		case strings.HasPrefix(line, sessionExpires):
			s.expires, _ = time.Parse(time.RFC3339, strings.TrimPrefix(line, sessionExpires))
		}
	}
	if s.token == "" || s.server == "" {
		return session{}, fmt.Errorf("%s: not a coffer login session file", path)
	}
	return s, nil
}

// writeSession saves s at path atomically, mode 0600 (directory 0700).
func writeSession(path string, s session) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".token-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	_, err = fmt.Fprintf(f, "%s\n%s%s\n%s%s\n%s%s\n", s.token, sessionServer, s.server, sessionUser, s.user, sessionExpires, s.expires.UTC().Format(time.RFC3339))
	if err == nil {
		err = f.Sync()
	}
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// sessionFor returns the saved login session for the server base (as
// parseAddr writes it), if there is one that has not expired. A session
// for another server is never sent to this one.
func (c *conn) sessionFor(base string) (tok, from string) {
	path, err := sessionPath()
	if err != nil {
		return "", ""
	}
	s, err := readSession(path)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			c.warn("%v", err)
		}
		return "", ""
	}
	if s.server != base {
		return "", ""
	}
	if !s.expires.IsZero() && !time.Now().Before(s.expires) {
		c.warn("the login session of %s in %s expired at %s: coffer login again", s.user, path, s.expires.Format(time.RFC3339))
		return "", ""
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		c.warn("token file %s has mode %04o: others on this machine may read it; chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	return s.token, "the login session of " + s.user + " (" + path + ")"
}

// loginSession sets t's token to the saved login session for t.addr, if
// there is one.
func (c *conn) loginSession(t *target) bool {
	u, err := parseAddr(t.addr)
	if err != nil {
		return false
	}
	t.token, t.tokenFrom = c.sessionFor(strings.TrimSuffix(u.String(), "/"))
	return t.token != ""
}

func newLoginCmd(c *conn) *cobra.Command {
	var o output
	var username string
	var passwordStdin bool
	cmd := &cobra.Command{
		Use:   "login --username NAME [--password-stdin]",
		Short: "Log in with a directory (LDAP / Active Directory) account",
		Long: `Log in to the server with a directory account (POST /v1/login). The password
is prompted for without echo, or read from stdin with --password-stdin (one
line); it is never an argument. The server answers with a session token
(default 8h) tied to you and to your mapped groups; it is saved, mode 0600,
at $XDG_CONFIG_HOME/coffer/token (default ~/.config/coffer/token) with the
server's address, and later commands against that server use it.

Which token a command uses, first match wins: --token, --token-file,
COFFER_TOKEN, COFFER_TOKEN_FILE, the login session (only for the server it
was made for, until it expires), then the context's token or token file.
So a login takes over from the context's token for that server until
coffer logout.`,
		Example: `  coffer login --username alice
  coffer login --username alice --context prod
  printf '%s\n' "$LDAP_PASSWORD" | coffer login --username svc-ci --password-stdin
  coffer whoami      # ID: ldap:alice, its groups and grants`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if username == "" {
				return usageError(errors.New("--username: required"))
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			password, err := readPassword(cmd, username, passwordStdin)
			defer clear(password)
			if err != nil {
				return err
			}
			body := loginJSON(username, password)
			defer clear(body)
			clear(password)
			req, err := http.NewRequest("POST", cl.base+"/v1/login", bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := cl.http.Do(req)
			if err != nil {
				return cl.unreachable(err)
			}
			defer resp.Body.Close()
			data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if err != nil {
				return cl.unreachable(err)
			}
			if resp.StatusCode != http.StatusOK {
				var e struct {
					Error string `json:"error"`
				}
				if json.Unmarshal(data, &e) != nil || e.Error == "" {
					e.Error = strings.TrimSpace(string(data))
				}
				return &apiError{Status: resp.StatusCode, Msg: e.Error}
			}
			var out struct {
				Token   string    `json:"token,omitempty"`
				ID      string    `json:"id"`
				User    string    `json:"user"`
				Groups  []string  `json:"groups"`
				Grants  []grant   `json:"grants"`
				Expires time.Time `json:"expires"`
			}
			if err := json.Unmarshal(data, &out); err != nil || out.Token == "" {
				return fmt.Errorf("the server's answer to the login is not a session: %v", err)
			}
			clear(data)
			path, err := sessionPath()
			if err != nil {
				return usageError(err)
			}
			old, oldErr := readSession(path)
			if err := writeSession(path, session{token: out.Token, server: cl.base, user: out.User, expires: out.Expires}); err != nil {
				return fmt.Errorf("save the session token: %w", err)
			}
			// The session this one replaces in the file ends now, rather
			// than live on unseen until it expires (best effort).
			if oldErr == nil && old.server == cl.base && old.token != out.Token {
				prev := *cl
				prev.token, prev.rec = old.token, nil
				if err := prev.do("POST", "/v1/logout", nil, nil); err == nil {
					c.warn("ended the previous session of %s", old.user)
				}
			}
			out.Token = "" // saved, not printed
			if o.structured() {
				return o.print(cmd.OutOrStdout(), out, nil, nil)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Logged in as %s until %s (in %s).\n", out.User, out.Expires.Format(time.RFC3339), roughly(time.Until(out.Expires)))
			for _, g := range out.Grants {
				fmt.Fprintf(w, "  %s on %s\n", g.Role, orAll(g.Scope))
			}
			fmt.Fprintf(w, "Session token saved in %s; coffer logout ends it.\n", path)
			if env := os.Getenv("COFFER_TOKEN"); env != "" {
				c.warn("COFFER_TOKEN is set: commands use it, not this session, until you unset it")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&username, "username", "", "directory login name (uid, sAMAccountName)")
	cmd.Flags().BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin (its first line) instead of prompting")
	o.flag(cmd)
	return cmd
}

type grant struct {
	Role  string `json:"role"`
	Scope string `json:"scope,omitempty"`
}

func orAll(scope string) string {
	if scope == "" {
		return "all names"
	}
	return scope + "*"
}

// readPassword prompts on the terminal without echo, or reads the first
// line of stdin.
func readPassword(cmd *cobra.Command, user string, fromStdin bool) ([]byte, error) {
	in := cmd.InOrStdin()
	if !fromStdin {
		f, ok := in.(*os.File)
		if !ok || !term.IsTerminal(int(f.Fd())) {
			return nil, usageError(errors.New("stdin is not a terminal: give --password-stdin to read the password from it"))
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "Password for %s: ", user)
		pw, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		if err != nil {
			return nil, fmt.Errorf("read the password: %w", err)
		}
		if len(pw) == 0 {
			return nil, usageError(errors.New("empty password"))
		}
		return pw, nil
	}
	r := bufio.NewReaderSize(in, 4096)
	line, err := r.ReadSlice('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		clear(line)
		return nil, usageError(fmt.Errorf("--password-stdin: %v", err))
	}
	pw := bytes.Clone(bytes.TrimRight(line, "\r\n"))
	clear(line)
	if len(pw) == 0 {
		return nil, usageError(errors.New("--password-stdin: stdin holds no password"))
	}
	return pw, nil
}

// loginJSON is the login body, built without a string copy of the password.
func loginJSON(user string, password []byte) []byte {
	u, _ := json.Marshal(user)
	b := make([]byte, 0, len(u)+len(password)*2+40)
	b = append(b, `{"username":`...)
	b = append(b, u...)
	b = append(b, `,"password":"`...)
	const hex = "0123456789abcdef"
	for i := 0; i < len(password); {
		r, n := utf8.DecodeRune(password[i:])
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		case r == utf8.RuneError && n == 1:
			b = append(b, password[i]) // the server refuses what is not UTF-8
		default:
			b = append(b, password[i:i+n]...)
		}
		i += n
	}
	return append(b, `"}`...)
}

func newLogoutCmd(c *conn) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:   "logout",
		Short: "End the login session (coffer login) and remove its token file",
		Long: `Revoke the saved login session on the server it was made for (POST /v1/logout)
and delete $XDG_CONFIG_HOME/coffer/token. A session the server no longer
knows (expired, revoked) is only deleted. If the server cannot be reached,
the file stays, so that you can try again.`,
		Example: "  coffer logout\n  coffer logout -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := sessionPath()
			if err != nil {
				return usageError(err)
			}
			s, err := readSession(path)
			if errors.Is(err, fs.ErrNotExist) {
				return usageError(fmt.Errorf("not logged in: %s does not exist", path))
			}
			if err != nil {
				return usageError(err)
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			cl.base, cl.token, cl.target.addrFrom = s.server, s.token, "the login session in "+path
			msg := "Logged out " + s.user + "."
			err = cl.do("POST", "/v1/logout", nil, nil)
			var ae *apiError
			if errors.As(err, &ae) && ae.Status == http.StatusUnauthorized {
				msg, err = "The session of "+s.user+" had already ended.", nil
			}
			if err != nil {
				return err
			}
			if err := os.Remove(path); err != nil {
				return err
			}
			if o.structured() {
				return o.print(cmd.OutOrStdout(), struct{}{}, nil, nil)
			}
			fmt.Fprintln(cmd.OutOrStdout(), msg)
			return nil
		},
	}
	o.flag(cmd)
	return cmd
}
