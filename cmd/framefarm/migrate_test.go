package main

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"
	"time"

	farmpb "github.com/framefarm/framefarm/proto"
	_ "modernc.org/sqlite"
)

// TestResumesOlderDataFolder opens a data folder that an earlier version
// wrote and was killed in (testdata/v1farm: the single-job coordinator of
// commit 635ddad, SIGKILLed with two of four sets rendered), and finishes
// its job frame-exact without rendering a completed set again.
func TestResumesOlderDataFolder(t *testing.T) {
	needFFmpeg(t)
	root := t.TempDir()
	if err := os.CopyFS(root, os.DirFS("testdata/v1farm")); err != nil {
		t.Fatal(err)
	}
	frames, data := filepath.Join(root, "frames"), filepath.Join(root, "data")
	const job = "b817ad1716ec"

	// The copy has new paths and modification times: give it the ones the
	// job recorded, as a folder left in place would have.
	db, err := sql.Open("sqlite", "file:"+filepath.Join(data, "framefarm.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE jobs SET frames_dir=?, out_path=? WHERE id=?`, frames, filepath.Join(root, "final.mkv"), job); err != nil {
		t.Fatal(err)
	}
	rows, err := db.Query(`SELECT name, mtime_ns FROM frames WHERE job_id=?`, job)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var name string
		var mt int64
		if err := rows.Scan(&name, &mt); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(filepath.Join(frames, name), time.Unix(0, mt), time.Unix(0, mt)); err != nil {
			t.Fatal(err)
		}
	}
	rows.Close()
	completed := map[int32]bool{}
	rows, err = db.Query(`SELECT idx FROM sets WHERE job_id=? AND state='C'`, job)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var i int32
		if err := rows.Scan(&i); err != nil {
			t.Fatal(err)
		}
		completed[i] = true
	}
	rows.Close()
	var lastSeq uint64
	if err := db.QueryRow(`SELECT last_seq FROM jobs WHERE id=?`, job).Scan(&lastSeq); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if len(completed) == 0 || len(completed) == 4 {
		t.Fatalf("the fixture should hold some completed sets and some not: %v", completed)
	}

	args := []string{"coordinator", "--frames", frames, "--data", data, "--listen", "127.0.0.1:0",
		"--codec", "ffv1", "--out", filepath.Join(root, "final.mkv"), "--sets", "4",
		"--heartbeat-timeout", "5s", "--poll-window", "2s"}
	coord, m := start(t, "coordinator", coordReady, args...)
	if m[1] != job {
		t.Fatalf("coordinator runs job %s, want the data folder's %s resumed", m[1], job)
	}
	f := &farm{coord: coord, job: m[1], addr: m[2], data: data, coordArgs: args}
	w := watch(t, f.addr)
	addNode(t, f, "node-a", nodeOpts{})
	out := filepath.Join(root, "fetched.mkv")
	f.fetch(t, out)
	checkExact(t, out, reference(t, frames, 1))
	checkExact(t, filepath.Join(root, "final.mkv"), reference(t, frames, 1))
	for _, e := range w.events() {
		if e.Seq > lastSeq && e.Kind == "set_granted" && completed[e.SetIndex] {
			t.Errorf("set %d was completed before the restart and rendered again: %s", e.SetIndex, formatEvents([]*farmpb.Event{e}))
		}
	}
}
