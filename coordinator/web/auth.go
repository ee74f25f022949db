package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Sign-in. With a token, a browser signs in once (POST /api/login) and gets
// a random session id in an HttpOnly, SameSite=Strict cookie; scripts send
// "Authorization: Bearer TOKEN" instead. Every state-changing request made
// with the cookie (or to a farm without a token) must also carry the
// session's CSRF token in the X-CSRF-Token header, which a page of another
// site can neither read nor send without the browser asking us first (and
// we allow no other origin); requests that a browser marks as cross-site
// (Sec-Fetch-Site, Origin) are refused outright.

const (
	cookieName = "framefarm_session"
	csrfHeader = "X-CSRF-Token"
	// maxSessions bounds the sessions kept: the oldest is dropped first.
	maxSessions = 1024
	sessionTTL  = 7 * 24 * time.Hour
)

type auth struct {
	token [32]byte
	set   bool
	// key signs CSRF tokens; it lives as long as the process.
	key [32]byte
	now func() time.Time

	mu       sync.Mutex
	sessions map[string]time.Time // id → expiry
	// guessers are the clients (by address) that gave a wrong token in
	// their current window.
	guessers map[string]*guesser
}

// A client that keeps giving wrong tokens gets only a few tries a minute:
// the sign-in page and the API are on the network, and a token may be
// short. The table of clients is bounded like the sessions.
const (
	maxGuesses  = 10
	guessWindow = time.Minute
	maxGuessers = 10_000
)

// guesser counts one client's wrong tokens since its window began.
type guesser struct {
	wrong int
	since time.Time
}

func newAuth(token string, now func() time.Time) (*auth, error) {
	a := &auth{now: now, sessions: map[string]time.Time{}, guessers: map[string]*guesser{}}
	if token != "" {
		a.token, a.set = sha256.Sum256([]byte(token)), true
	}
	if _, err := rand.Read(a.key[:]); err != nil {
		return nil, err
	}
	return a, nil
}

// tokenOK compares hashes, so that the comparison takes the same time
// whatever the lengths.
func (a *auth) tokenOK(got string) bool {
	sum := sha256.Sum256([]byte(got))
	return subtle.ConstantTimeCompare(sum[:], a.token[:]) == 1
}

// errGuessing refuses a client that gave too many wrong tokens lately.
var errGuessing = fmt.Errorf("too many wrong tokens from this address: wait a minute (at most %d tries a minute)", maxGuesses)

// guess checks a token r's client gives, counting the wrong ones: after
// maxGuesses in guessWindow the client is refused, right token or not,
// until its window ends.
func (a *auth) guess(r *http.Request, token string) (bool, error) {
	client, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		client = r.RemoteAddr
	}
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	g := a.guessers[client]
	if g != nil && now.Sub(g.since) >= guessWindow {
		delete(a.guessers, client)
		g = nil
	}
	if g != nil && g.wrong >= maxGuesses {
		return false, errGuessing
	}
	if a.tokenOK(token) {
		return true, nil
	}
	if g == nil {
		if len(a.guessers) >= maxGuessers {
			for k, o := range a.guessers {
				if now.Sub(o.since) >= guessWindow {
					delete(a.guessers, k)
				}
			}
		}
		if len(a.guessers) >= maxGuessers {
			// Full of clients guessing right now: count this one with
			// them all, under one key, rather than grow.
			client = "*"
		}
		if g = a.guessers[client]; g == nil {
			g = &guesser{since: now}
			a.guessers[client] = g
		}
	}
	g.wrong++
	return false, nil
}

// who says how r is signed in: "bearer", "session" (with its id), or ""
// when it is not (with errGuessing for a client refused for its wrong
// tokens). A farm without a token lets everyone in as the session "".
func (a *auth) who(r *http.Request) (how, session string, err error) {
	if h := r.Header.Get("Authorization"); h != "" && a.set {
		t, _ := strings.CutPrefix(h, "Bearer ")
		if ok, err := a.guess(r, t); !ok {
			return "", "", err
		}
		return "bearer", "", nil
	}
	if !a.set {
		return "open", "", nil
	}
	c, err := r.Cookie(cookieName)
	if err != nil {
		return "", "", nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	exp, ok := a.sessions[c.Value]
	if !ok || a.now().After(exp) {
		delete(a.sessions, c.Value)
		return "", "", nil
	}
	return "session", c.Value, nil
}

// csrf is the CSRF token of a session.
func (a *auth) csrf(session string) string {
	m := hmac.New(sha256.New, a.key[:])
	m.Write([]byte("csrf\x00" + session))
	return hex.EncodeToString(m.Sum(nil))
}

func safeMethod(m string) bool {
	return m == http.MethodGet || m == http.MethodHead || m == http.MethodOptions
}

// crossSite says whether the browser says r comes from another site.
func crossSite(r *http.Request) bool {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return true
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return true
		}
	}
	return false
}

// require lets in signed-in requests, and state changes only with proof
// they come from our own pages (or a script holding the token).
func (a *auth) require(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		how, session, err := a.who(r)
		if err != nil {
			w.Header().Set("Retry-After", strconv.Itoa(int(guessWindow.Seconds())))
			writeJSON(w, http.StatusTooManyRequests, apiError{Error: err.Error()})
			return
		}
		if how == "" {
			if r.Method == http.MethodGet && !strings.HasPrefix(r.URL.Path, "/api/") && r.URL.Path != "/metrics" {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="framefarm"`)
			writeJSON(w, http.StatusUnauthorized, apiError{Error: "sign in first: the farm's token, as the coordinator's --token (or Authorization: Bearer TOKEN)"})
			return
		}
		if !safeMethod(r.Method) && how != "bearer" {
			if crossSite(r) {
				writeJSON(w, http.StatusForbidden, apiError{Error: "refused: a request from another site"})
				return
			}
			got := r.Header.Get(csrfHeader)
			if subtle.ConstantTimeCompare([]byte(got), []byte(a.csrf(session))) != 1 {
				writeJSON(w, http.StatusForbidden, apiError{Error: "refused: missing or wrong " + csrfHeader + " header (reload the page; scripts send Authorization: Bearer TOKEN, or GET /api/session's csrf)"})
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// session tells a page its CSRF token and whether the farm has a token.
func (a *auth) session(w http.ResponseWriter, r *http.Request) {
	_, session, _ := a.who(r)
	writeJSON(w, http.StatusOK, map[string]any{"csrf": a.csrf(session), "token_required": a.set})
}

// login takes the token (form field or JSON "token") and starts a session.
func (a *auth) login(w http.ResponseWriter, r *http.Request) {
	if crossSite(r) {
		writeJSON(w, http.StatusForbidden, apiError{Error: "refused: a sign-in from another site"})
		return
	}
	if !a.set {
		writeJSON(w, http.StatusOK, map[string]any{"csrf": a.csrf(""), "token_required": false})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 8<<10)
	var body struct {
		Token string `json:"token"`
	}
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		_ = json.NewDecoder(r.Body).Decode(&body)
	} else {
		body.Token = r.PostFormValue("token")
	}
	if ok, err := a.guess(r, body.Token); err != nil {
		w.Header().Set("Retry-After", strconv.Itoa(int(guessWindow.Seconds())))
		writeJSON(w, http.StatusTooManyRequests, apiError{Error: err.Error(), Field: "token"})
		return
	} else if !ok {
		writeJSON(w, http.StatusUnauthorized, apiError{Error: "wrong token: use the coordinator's --token (or its FRAMEFARM_TOKEN)", Field: "token"})
		return
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
		return
	}
	id := hex.EncodeToString(raw[:])
	now := a.now()
	a.mu.Lock()
	for k, exp := range a.sessions {
		if now.After(exp) {
			delete(a.sessions, k)
		}
	}
	if len(a.sessions) >= maxSessions {
		oldest, at := "", time.Time{}
		for k, exp := range a.sessions {
			if oldest == "" || exp.Before(at) {
				oldest, at = k, exp
			}
		}
		delete(a.sessions, oldest)
	}
	a.sessions[id] = now.Add(sessionTTL)
	a.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: r.TLS != nil, MaxAge: int(sessionTTL / time.Second)})
	writeJSON(w, http.StatusOK, map[string]any{"csrf": a.csrf(id), "token_required": true})
}

func (a *auth) logout(w http.ResponseWriter, r *http.Request) {
	if crossSite(r) {
		writeJSON(w, http.StatusForbidden, apiError{Error: "refused: a request from another site"})
		return
	}
	if c, err := r.Cookie(cookieName); err == nil {
		a.mu.Lock()
		delete(a.sessions, c.Value)
		a.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: "", Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode, MaxAge: -1})
	writeJSON(w, http.StatusOK, map[string]string{})
}
