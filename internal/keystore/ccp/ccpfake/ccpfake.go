// Package ccpfake is a CyberArk Central Credential Provider for tests:
// HTTPS on 127.0.0.1 that requires and verifies a client certificate
// (mutual TLS, as a CCP that authenticates applications by certificate
// does), authorises the AppID against the certificate's common name, and
// answers GET /AIMWebService/api/Accounts?AppID=&Safe=&Object= with the
// documented JSON ({"Content", "UserName", ...}, or {"ErrorCode",
// "ErrorMsg"} with APPAP004E, APPAP306E, APPAP282E, AIMWS030E). There is no
// official Go client; the Coffer client is plain net/http.
package ccpfake

import (
	"crypto/tls"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"coffer/internal/keystore/keystoretest"
)

// Server is a fake CCP.
type Server struct {
	URL string
	PKI *keystoretest.PKI

	mu       sync.Mutex
	apps     map[string]string // AppID -> client certificate CN allowed to use it
	accounts map[string]*account
	calls    int
}

type account struct {
	content  string
	changing bool
}

// New starts a fake CCP whose server certificate and allowed client
// certificates come from pki, and stops it at the end of the test.
func New(t testing.TB, pki *keystoretest.PKI) *Server {
	s := &Server{PKI: pki, apps: map[string]string{}, accounts: map[string]*account{}}
	certFile, keyFile := pki.Issue(t, "ccp-server", true)
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs: pki.Pool(), MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	s.URL = srv.URL
	t.Cleanup(srv.Close)
	return s
}

// Allow lets the client certificate with common name cn use appID ("" cn:
// revoke the AppID's authorisation).
func (s *Server) Allow(appID, cn string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cn == "" {
		delete(s.apps, appID)
	} else {
		s.apps[appID] = cn
	}
}

// Set stores an account's content (a password change).
func (s *Server) Set(safe, object, content string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accounts[safe+"/"+object] = &account{content: content}
}

// Delete removes an account.
func (s *Server) Delete(safe, object string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.accounts, safe+"/"+object)
}

// Changing marks an account's password as being changed (APPAP282E).
func (s *Server) Changing(safe, object string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.accounts[safe+"/"+object]; a != nil {
		a.changing = on
	}
}

// Calls is the number of account requests served.
func (s *Server) Calls() int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/AIMWebService/api/Accounts" || r.Method != http.MethodGet {
		ccpError(w, 404, "AIMWS001E", "no such resource")
		return
	}
	q := r.URL.Query()
	app, safe, object := q.Get("AppID"), q.Get("Safe"), q.Get("Object")
	if app == "" || safe == "" || object == "" {
		ccpError(w, 400, "AIMWS030E", "Invalid request. The AppID, Safe and Object parameters are mandatory")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	cn := ""
	if len(r.TLS.PeerCertificates) > 0 {
		cn = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	if allowed, ok := s.apps[app]; !ok || allowed != cn {
		ccpError(w, 403, "APPAP306E", "Failed to verify application authentication data: [AppID="+app+"]")
		return
	}
	a := s.accounts[safe+"/"+object]
	switch {
	case a == nil:
		ccpError(w, 404, "APPAP004E", "Password object matching query [AppID="+app+";Safe="+safe+";Object="+object+
			"] was not found (Diagnostic Info: 5).")
	case a.changing:
		ccpError(w, 500, "APPAP282E", "Password object is being reset by the Vault (Diagnostic Info: 1)")
	default:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"Content": a.content, "UserName": "svc_" + object, "Address": "db.example", "Database": "",
			"PolicyID": "MySQL", "DeviceType": "Database", "Name": object, "Folder": "Root", "Safe": safe,
			"PasswordChangeInProcess": "False", "CreationMethod": "PVWA",
		})
	}
}

func ccpError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"ErrorCode": code, "ErrorMsg": msg})
}
