// Package ldaptest runs a real OpenLDAP slapd for tests: on 127.0.0.1, with
// its config, database and TLS certificate in a temporary directory, loaded
// with test users and groups. Debian's slapd and ldap-utils packages provide
// it; without them a test is skipped with a message, or fails under
// COFFER_REQUIRE_TOOLS=1.
package ldaptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"coffer/internal/authz"
	cldap "coffer/internal/directory/ldap"
)

// The directory's fixed contents.
const (
	Base         = "dc=coffer,dc=test"
	AdminDN      = "cn=admin," + Base
	AdminPW      = "admin-Passw0rd"
	People       = "ou=people," + Base
	GroupsBase   = "ou=groups," + Base
	PaymentsOps  = "cn=payments-ops," + GroupsBase // operator, payments/*
	Auditors     = "cn=auditors," + GroupsBase     // auditor
	CofferAdmins = "cn=coffer-admins," + GroupsBase
	Developers   = "cn=developers," + GroupsBase // mapped to nothing
)

// User is a test account.
type User struct {
	Name, Password string
	Groups         []string
	Locked         bool // pwdAccountLockedTime set: a disabled account
}

// Users: alice is in two mapped groups, carol in one, bob only in an
// unmapped one, dave is locked, root is an admin.
var Users = []User{
	{Name: "alice", Password: "Al1ce-pw!", Groups: []string{PaymentsOps, Auditors, Developers}},
	{Name: "bob", Password: "B0b-pw", Groups: []string{Developers}},
	{Name: "carol", Password: "C4rol (pw) *", Groups: []string{PaymentsOps}},
	{Name: "dave", Password: "D4ve-pw", Groups: []string{PaymentsOps}, Locked: true},
	{Name: "root", Password: "R00t-pw", Groups: []string{CofferAdmins}},
}

// Password returns the password of a test user.
func Password(name string) string {
	for _, u := range Users {
		if u.Name == name {
			return u.Password
		}
	}
	panic("ldaptest: no user " + name)
}

// Groups is the mapping the tests use.
var Groups = map[string]authz.Grant{
	PaymentsOps:  {Role: authz.Operator, Scope: "payments/*"},
	Auditors:     {Role: authz.Auditor},
	CofferAdmins: {Role: authz.Admin},
}

// Server is a running slapd.
type Server struct {
	URL      string // ldap://127.0.0.1:port (plain; StartTLS works on it)
	LDAPSURL string // ldaps://127.0.0.1:port
	CAFile   string // the self-signed server certificate, PEM
	Dir      string
	// BindPasswordFile holds AdminPW.
	BindPasswordFile string

	t    testing.TB
	cmd  *exec.Cmd
	args []string
	uid  int
	gid  int
	done chan struct{}
}

// Binaries: where Debian puts them.
const (
	slapdBin = "/usr/sbin/slapd"
	slapadd  = "/usr/sbin/slapadd"
)

// Available says whether slapd can run here, and why not.
func Available() (bool, string) {
	for _, b := range []string{slapdBin, slapadd} {
		if _, err := os.Stat(b); err != nil {
			return false, "slapd is not installed (apt-get install slapd ldap-utils): " + err.Error()
		}
	}
	return true, ""
}

// Start runs slapd for t, loaded with Users, and stops it at cleanup.
func Start(t testing.TB) *Server {
	t.Helper()
	if ok, why := Available(); !ok {
		if os.Getenv("COFFER_REQUIRE_TOOLS") == "1" {
			t.Fatal(why)
		}
		t.Skip(why)
	}
	dir, err := os.MkdirTemp("", "coffer-slapd-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &Server{t: t, Dir: dir, uid: -1, gid: -1}
	// As root, slapd drops to the openldap user (it must never run as
	// root): the directory is handed to that user.
	if os.Getuid() == 0 {
		if u, err := user.Lookup("openldap"); err == nil {
			s.uid, _ = strconv.Atoi(u.Uid)
			s.gid, _ = strconv.Atoi(u.Gid)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "db"), 0o700))
	must(os.MkdirAll(filepath.Join(dir, "run"), 0o700))
	s.CAFile = filepath.Join(dir, "tls.crt")
	must(writeCert(s.CAFile, filepath.Join(dir, "tls.key")))
	s.BindPasswordFile = filepath.Join(dir, "bind-password")
	must(os.WriteFile(s.BindPasswordFile, []byte(AdminPW+"\n"), 0o600))
	conf := filepath.Join(dir, "slapd.conf")
	must(os.WriteFile(conf, []byte(slapdConf(dir)), 0o600))
	ldif := filepath.Join(dir, "base.ldif")
	must(os.WriteFile(ldif, []byte(baseLDIF()), 0o600))
	if out, err := exec.Command(slapadd, "-f", conf, "-l", ldif).CombinedOutput(); err != nil {
		t.Fatalf("slapadd: %v\n%s", err, out)
	}
	if s.uid >= 0 {
		must(filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, s.uid, s.gid)
		}))
	}
	plain, tlsPort := freePort(t), freePort(t)
	s.URL = "ldap://127.0.0.1:" + plain
	s.LDAPSURL = "ldaps://127.0.0.1:" + tlsPort
	s.args = []string{"-f", conf, "-h", s.URL + "/ " + s.LDAPSURL + "/", "-d", "0"}
	if s.uid >= 0 {
		s.args = append(s.args, "-u", "openldap", "-g", "openldap")
	}
	s.start()
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start() {
	t := s.t
	t.Helper()
	log, err := os.OpenFile(filepath.Join(s.Dir, "slapd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	cmd := exec.Command(slapdBin, s.args...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("slapd: %v", err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(s.done) }()
	addr := strings.TrimPrefix(s.URL, "ldap://")
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-s.done:
			b, _ := os.ReadFile(filepath.Join(s.Dir, "slapd.log"))
			t.Fatalf("slapd exited at start:\n%s", b)
		default:
		}
		if time.Now().After(deadline) {
			s.Stop()
			t.Fatalf("slapd did not listen on %s within 20s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops slapd (the directory is then down); Restart starts it again
// on the same ports with the same data.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd = nil
}

// Restart starts a stopped slapd again.
func (s *Server) Restart() {
	s.t.Helper()
	s.start()
}

// Config is a coffer ldap: config for this server, in the shape of the
// issue (plain ldap://, insecure: true, group_filter (member={dn})).
func (s *Server) Config() cldap.Config {
	return cldap.Config{
		URL:              s.URL,
		Insecure:         true,
		BindDN:           AdminDN,
		BindPasswordFile: s.BindPasswordFile,
		UserBase:         People,
		UserFilter:       "(uid={user})",
		GroupBase:        GroupsBase,
		GroupFilter:      "(member={dn})",
		Groups:           Groups,
	}
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

func slapdConf(dir string) string {
	return fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile  %[1]s/run/slapd.pid
argsfile %[1]s/run/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
moduleload ppolicy
TLSCertificateFile %[1]s/tls.crt
TLSCertificateKeyFile %[1]s/tls.key
database mdb
suffix "%[2]s"
rootdn "%[3]s"
rootpw %[4]s
directory %[1]s/db
maxsize 104857600
index objectClass eq
index uid,cn eq
index member eq
overlay memberof
memberof-group-oc groupOfNames
memberof-member-ad member
memberof-memberof-ad memberOf
overlay ppolicy
ppolicy_default "cn=default,ou=policies,%[2]s"
access to attrs=userPassword by self write by anonymous auth by * none
access to * by dn.exact="%[3]s" manage by users read by * none
`, dir, Base, AdminDN, AdminPW)
}

func baseLDIF() string {
	var b strings.Builder
	fmt.Fprintf(&b, "dn: %s\nobjectClass: dcObject\nobjectClass: organization\no: coffer\ndc: coffer\n\n", Base)
	fmt.Fprintf(&b, "dn: %s\nobjectClass: organizationalUnit\nou: people\n\n", People)
	fmt.Fprintf(&b, "dn: %s\nobjectClass: organizationalUnit\nou: groups\n\n", GroupsBase)
	// The password policy that makes slapd itself refuse a locked
	// account's bind.
	fmt.Fprintf(&b, "dn: ou=policies,%s\nobjectClass: organizationalUnit\nou: policies\n\n", Base)
	fmt.Fprintf(&b, "dn: cn=default,ou=policies,%s\nobjectClass: applicationProcess\nobjectClass: pwdPolicy\ncn: default\npwdAttribute: userPassword\npwdLockout: TRUE\n\n", Base)
	members := map[string][]string{}
	for _, u := range Users {
		dn := "uid=" + u.Name + "," + People
		fmt.Fprintf(&b, "dn: %s\nobjectClass: inetOrgPerson\nuid: %s\ncn: %s\nsn: %s\nuserPassword: %s\n", dn, u.Name, u.Name, u.Name, u.Password)
		if u.Locked {
			b.WriteString("pwdAccountLockedTime: 000001010000Z\n")
		}
		for _, g := range u.Groups {
			fmt.Fprintf(&b, "memberOf: %s\n", g)
			members[g] = append(members[g], dn)
		}
		b.WriteString("\n")
	}
	for _, g := range []string{PaymentsOps, Auditors, CofferAdmins, Developers} {
		cn := strings.TrimPrefix(strings.Split(g, ",")[0], "cn=")
		fmt.Fprintf(&b, "dn: %s\nobjectClass: groupOfNames\ncn: %s\n", g, cn)
		for _, m := range members[g] {
			fmt.Fprintf(&b, "member: %s\n", m)
		}
		b.WriteString("\n")
	}
	return b.String()
}

// writeCert writes a self-signed ECDSA certificate for 127.0.0.1 and
// localhost, and its key.
func writeCert(certPath, keyPath string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}
