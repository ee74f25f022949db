package web

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"
)

// A client giving wrong tokens is refused after maxGuesses of them, even
// with the right one, until its minute is over; other clients are not.
func TestWrongTokensAreRationed(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	a, err := newAuth("s3cret", func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	from := func(addr, token string) (bool, error) {
		r := httptest.NewRequest("GET", "/api/jobs", nil)
		r.RemoteAddr = addr
		return a.guess(r, token)
	}
	for i := range maxGuesses {
		if ok, err := from("192.0.2.7:4000", fmt.Sprint("guess", i)); ok || err != nil {
			t.Fatalf("wrong guess %d: ok %v, err %v; want refused as wrong", i, ok, err)
		}
	}
	if ok, err := from("192.0.2.7:4001", "s3cret"); ok || !errors.Is(err, errGuessing) {
		t.Fatalf("right token after %d wrong ones: ok %v, err %v; want errGuessing", maxGuesses, ok, err)
	}
	if ok, err := from("198.51.100.1:4000", "s3cret"); !ok || err != nil {
		t.Fatalf("another client's right token: ok %v, err %v", ok, err)
	}
	now = now.Add(guessWindow)
	if ok, err := from("192.0.2.7:4002", "s3cret"); !ok || err != nil {
		t.Fatalf("a minute later: ok %v, err %v; want let in", ok, err)
	}
	// The table of clients stays bounded however many addresses guess.
	for i := range maxGuessers + 50 {
		_, _ = from(fmt.Sprintf("10.%d.%d.%d:1", i>>16&255, i>>8&255, i&255), "wrong")
	}
	if n := len(a.guessers); n > maxGuessers+1 {
		t.Errorf("%d clients tracked, want at most %d", n, maxGuessers+1)
	}
}
