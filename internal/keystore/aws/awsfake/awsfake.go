// Package awsfake is an AWS Secrets Manager server for tests, on 127.0.0.1.
// It speaks the wire format the official SDK uses (AWS JSON 1.1: POST /,
// X-Amz-Target: secretsmanager.<Op>, epoch-second timestamps, errors as
// {"__type","message"}), and verifies every request's SigV4 signature by
// signing it again with the configured credentials. No emulator can be had
// for this machine, so this follows the documented API; the tests drive it
// with the official client.
//
// Operations: CreateSecret, PutSecretValue, GetSecretValue, DescribeSecret
// and ListSecrets (paged, IncludePlannedDeletion); tests change secrets with
// PutString, PutBinary and Delete (scheduled or forced).
package awsfake

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Account is the account id in the fake's ARNs.
const Account = "111122223333"

// Server is a fake Secrets Manager.
type Server struct {
	URL    string // http://127.0.0.1:PORT
	Region string

	mu        sync.Mutex
	accessKey string
	secretKey string
	secrets   map[string]*fakeSecret // by name
	pageSize  int
	denyList  bool
	calls     map[string]int
	srv       *httptest.Server
}

type fakeSecret struct {
	name, arn   string
	created     time.Time
	lastChanged time.Time
	deleted     *time.Time
	versions    map[string]*version // by VersionId
}

type version struct {
	id     string
	str    *string
	bin    []byte
	stages []string
	made   time.Time
}

// New starts a fake for region, accepting requests signed with the given
// credentials, and stops it at the end of the test.
func New(t testing.TB, region, accessKey, secretKey string) *Server {
	s := &Server{Region: region, accessKey: accessKey, secretKey: secretKey,
		secrets: map[string]*fakeSecret{}, pageSize: 100, calls: map[string]int{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// SetCredentials changes the credentials the fake accepts.
func (s *Server) SetCredentials(accessKey, secretKey string) {
	s.mu.Lock()
	s.accessKey, s.secretKey = accessKey, secretKey
	s.mu.Unlock()
}

// SetPageSize caps the entries of one ListSecrets page (default 100).
func (s *Server) SetPageSize(n int) { s.mu.Lock(); s.pageSize = n; s.mu.Unlock() }

// DenyList makes ListSecrets answer AccessDeniedException (a policy that
// grants GetSecretValue and DescribeSecret only).
func (s *Server) DenyList(deny bool) { s.mu.Lock(); s.denyList = deny; s.mu.Unlock() }

// Calls returns how many requests of an operation were served.
func (s *Server) Calls(op string) int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls[op] }

// PutString creates the secret or adds a new AWSCURRENT version; it
// returns the ARN.
func (s *Server) PutString(name, value string) string { return s.put(name, &value, nil) }

// PutBinary is PutString with a SecretBinary value.
func (s *Server) PutBinary(name string, value []byte) string {
	return s.put(name, nil, append([]byte(nil), value...))
}

func (s *Server) put(name string, str *string, bin []byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	sec := s.secrets[name]
	now := time.Now()
	if sec == nil {
		sec = &fakeSecret{name: name, created: now, versions: map[string]*version{},
			arn: fmt.Sprintf("arn:aws:secretsmanager:%s:%s:secret:%s-%s", s.Region, Account, name, randSuffix())}
		s.secrets[name] = sec
	}
	for _, v := range sec.versions {
		switch {
		case hasStage(v.stages, "AWSCURRENT"):
			v.stages = []string{"AWSPREVIOUS"}
		case hasStage(v.stages, "AWSPREVIOUS"):
			v.stages = nil
		}
	}
	id := uuid()
	sec.versions[id] = &version{id: id, str: str, bin: bin, stages: []string{"AWSCURRENT"}, made: now}
	sec.lastChanged = now
	return sec.arn
}

// Delete schedules the secret for deletion (force: deletes it at once).
func (s *Server) Delete(name string, force bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if force {
		delete(s.secrets, name)
		return
	}
	if sec := s.secrets[name]; sec != nil {
		now := time.Now()
		sec.deleted, sec.lastChanged = &now, now
	}
}

var opPattern = regexp.MustCompile(`^secretsmanager\.([A-Za-z]+)$`)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || r.Method != http.MethodPost || r.URL.Path != "/" {
		fail(w, 400, "InvalidRequestException", "want POST /")
		return
	}
	m := opPattern.FindStringSubmatch(r.Header.Get("X-Amz-Target"))
	if m == nil || r.Header.Get("Content-Type") != "application/x-amz-json-1.1" {
		fail(w, 400, "UnknownOperationException", "bad X-Amz-Target or Content-Type")
		return
	}
	if code, msg := s.verify(r, body); code != "" {
		fail(w, 400, code, msg)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[m[1]]++
	var in map[string]any
	if err := json.Unmarshal(body, &in); err != nil {
		fail(w, 400, "SerializationException", "body is not JSON")
		return
	}
	switch m[1] {
	case "CreateSecret", "PutSecretValue":
		s.mu.Unlock()
		name := str(in, "Name")
		if m[1] == "PutSecretValue" {
			name = s.nameOf(str(in, "SecretId"))
		}
		v := str(in, "SecretString")
		arn := s.put(name, &v, nil)
		s.mu.Lock()
		reply(w, map[string]any{"ARN": arn, "Name": name})
	case "GetSecretValue":
		s.getSecretValue(w, in)
	case "DescribeSecret":
		s.describeSecret(w, in)
	case "ListSecrets":
		s.listSecrets(w, in)
	default:
		fail(w, 400, "UnknownOperationException", "not supported by the fake: "+m[1])
	}
}

// nameOf resolves a SecretId (name or ARN) to a name, s.mu not held.
func (s *Server) nameOf(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec := s.find(id); sec != nil {
		return sec.name
	}
	return id
}

func (s *Server) find(id string) *fakeSecret {
	if sec := s.secrets[id]; sec != nil {
		return sec
	}
	for _, sec := range s.secrets {
		if sec.arn == id {
			return sec
		}
	}
	return nil
}

func (s *Server) getSecretValue(w http.ResponseWriter, in map[string]any) {
	sec := s.find(str(in, "SecretId"))
	if sec == nil {
		fail(w, 400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
		return
	}
	if sec.deleted != nil {
		fail(w, 400, "InvalidRequestException", "You can't perform this operation on the secret because it was marked for deletion.")
		return
	}
	for _, v := range sec.versions {
		if !hasStage(v.stages, "AWSCURRENT") {
			continue
		}
		out := map[string]any{"ARN": sec.arn, "Name": sec.name, "VersionId": v.id, "VersionStages": v.stages,
			"CreatedDate": epoch(v.made)}
		if v.str != nil {
			out["SecretString"] = *v.str
		} else {
			out["SecretBinary"] = v.bin // []byte: base64 in JSON, as AWS sends it
		}
		reply(w, out)
		return
	}
	fail(w, 400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret value for staging label: AWSCURRENT")
}

func (s *Server) describeSecret(w http.ResponseWriter, in map[string]any) {
	sec := s.find(str(in, "SecretId"))
	if sec == nil {
		fail(w, 400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.")
		return
	}
	reply(w, entry(sec, "VersionIdsToStages"))
}

func entry(sec *fakeSecret, stagesKey string) map[string]any {
	stages := map[string][]string{}
	for _, v := range sec.versions {
		if len(v.stages) > 0 {
			stages[v.id] = v.stages
		}
	}
	out := map[string]any{"ARN": sec.arn, "Name": sec.name, "CreatedDate": epoch(sec.created),
		"LastChangedDate": epoch(sec.lastChanged), stagesKey: stages}
	if sec.deleted != nil {
		out["DeletedDate"] = epoch(*sec.deleted)
	}
	return out
}

func (s *Server) listSecrets(w http.ResponseWriter, in map[string]any) {
	if s.denyList {
		fail(w, 400, "AccessDeniedException", "User is not authorized to perform: secretsmanager:ListSecrets")
		return
	}
	names := make([]string, 0, len(s.secrets))
	for n, sec := range s.secrets {
		if sec.deleted == nil || in["IncludePlannedDeletion"] == true {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	start := 0
	if tok := str(in, "NextToken"); tok != "" {
		var err error
		if start, err = strconv.Atoi(tok); err != nil || start < 0 || start > len(names) {
			fail(w, 400, "InvalidNextTokenException", "bad NextToken")
			return
		}
	}
	n := s.pageSize
	if mr, ok := in["MaxResults"].(float64); ok && int(mr) < n {
		n = int(mr)
	}
	end := min(start+n, len(names))
	list := []map[string]any{}
	for _, name := range names[start:end] {
		list = append(list, entry(s.secrets[name], "SecretVersionsToStages"))
	}
	out := map[string]any{"SecretList": list}
	if end < len(names) {
		out["NextToken"] = strconv.Itoa(end)
	}
	reply(w, out)
}

// verify checks the SigV4 signature by signing the same request again.
func (s *Server) verify(r *http.Request, body []byte) (code, msg string) {
	s.mu.Lock()
	ak, sk := s.accessKey, s.secretKey
	s.mu.Unlock()
	auth := r.Header.Get("Authorization")
	m := regexp.MustCompile(`^AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/secretsmanager/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=[0-9a-f]{64}$`).FindStringSubmatch(auth)
	if m == nil {
		return "IncompleteSignature", "missing or malformed SigV4 Authorization"
	}
	if m[1] != ak {
		return "UnrecognizedClientException", "The security token included in the request is invalid."
	}
	if m[3] != s.Region {
		return "InvalidSignatureException", "Credential should be scoped to a valid region"
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil || time.Since(when).Abs() > 15*time.Minute {
		return "InvalidSignatureException", "Signature expired or X-Amz-Date missing"
	}
	again, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	again.Host = r.Host
	for _, h := range strings.Split(m[4], ";") {
		if h != "host" {
			again.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	sum := sha256.Sum256(body)
	err = v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: ak, SecretAccessKey: sk},
		again, hex.EncodeToString(sum[:]), "secretsmanager", s.Region, when)
	if err != nil || again.Header.Get("Authorization") != auth {
		return "InvalidSignatureException", "The request signature we calculated does not match the signature you provided."
	}
	return "", ""
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-Errortype", code)
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": code, "message": msg})
}

func str(in map[string]any, k string) string { s, _ := in[k].(string); return s }

func epoch(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func hasStage(stages []string, s string) bool {
	for _, x := range stages {
		if x == s {
			return true
		}
	}
	return false
}

func uuid() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6], b[8] = b[6]&0x0f|0x40, b[8]&0x3f|0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randSuffix() string {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}
