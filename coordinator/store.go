package coordinator

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/framefarm/framefarm/coordinator/job"
	"github.com/framefarm/framefarm/internal/atomicfile"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// stateStore is where the farm's state is kept and read back after a
// restart: SQLite (store) today. Changes arrive in batches, each written in
// one transaction before any of them is answered.
type stateStore interface {
	// loadJobs reads every job, and the farm's last event number.
	loadJobs(ctx context.Context) ([]*jobRun, uint64, error)
	write(ctx context.Context, b *batch) error
	setFinal(ctx context.Context, id, name string, size int64, sha string) error
	// events returns a job's events after seq, or the farm's (jobID "")
	// after the farm-wide number.
	events(ctx context.Context, jobID string, after uint64, limit int) ([]job.Event, error)
	// eventsOfKinds returns, by job, its events of those kinds in order.
	eventsOfKinds(ctx context.Context, kinds ...job.EventKind) (map[string][]job.Event, error)
	Close() error
}

// store keeps the coordinator's state in SQLite. Changes are committed in
// batches (see batch), each one transaction (synchronous=FULL), before any
// of them is acknowledged.
type store struct {
	db *sql.DB
	// The statements of every change, prepared once.
	insEvent, updSet, updJob *sql.Stmt
}

// migrations take a data folder from one schema version to the next
// (PRAGMA user_version); migrations[i] makes version i+1. Version 1 is the
// single-job coordinator's schema, whose folders have user_version 0 and
// all of its tables: its statements keep them as they are.
var migrations = []string{
	`CREATE TABLE IF NOT EXISTS jobs (
	id TEXT PRIMARY KEY,
	created_ms INTEGER NOT NULL,
	frames_dir TEXT NOT NULL,
	out_path TEXT NOT NULL,
	settings TEXT NOT NULL,
	fingerprint TEXT NOT NULL,
	state TEXT NOT NULL,
	reason TEXT NOT NULL DEFAULT '',
	next_token INTEGER NOT NULL DEFAULT 0,
	last_seq INTEGER NOT NULL DEFAULT 0,
	final_name TEXT NOT NULL DEFAULT '',
	final_size INTEGER NOT NULL DEFAULT 0,
	final_sha TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS frames (
	job_id TEXT NOT NULL,
	pos INTEGER NOT NULL,
	number INTEGER NOT NULL,
	name TEXT NOT NULL,
	size INTEGER NOT NULL,
	mtime_ns INTEGER NOT NULL,
	PRIMARY KEY (job_id, pos)
);
CREATE TABLE IF NOT EXISTS sets (
	job_id TEXT NOT NULL,
	idx INTEGER NOT NULL,
	first INTEGER NOT NULL,
	count INTEGER NOT NULL,
	state TEXT NOT NULL,
	node TEXT NOT NULL DEFAULT '',
	token INTEGER NOT NULL DEFAULT 0,
	failed_on TEXT NOT NULL DEFAULT '[]',
	last_error TEXT NOT NULL DEFAULT '',
	part TEXT NOT NULL DEFAULT '{}',
	PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS events (
	job_id TEXT NOT NULL,
	seq INTEGER NOT NULL,
	unix_ms INTEGER NOT NULL,
	kind TEXT NOT NULL,
	set_idx INTEGER NOT NULL,
	node TEXT NOT NULL,
	detail TEXT NOT NULL,
	PRIMARY KEY (job_id, seq)
);`,
	// 2: the standing farm. Jobs have a name, a priority and an end; events
	// a farm-wide number, given to the old ones in the order they were
	// written.
	`ALTER TABLE jobs ADD COLUMN name TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN finished_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN fseq INTEGER NOT NULL DEFAULT 0;
UPDATE events SET fseq = rowid;
UPDATE jobs SET finished_ms = (SELECT MAX(unix_ms) FROM events WHERE events.job_id = jobs.id) WHERE state IN ('done', 'failed');
CREATE INDEX events_by_fseq ON events (fseq);`,
	// 3: each frame's device and inode, so that a file swapped in under a
	// frame's name (a link to a file outside the folder) is told apart.
	`ALTER TABLE frames ADD COLUMN dev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE frames ADD COLUMN ino INTEGER NOT NULL DEFAULT 0;`,
	// 4: the ETag of a frame in a bucket, so that an object replaced under
	// the frame's key is told apart.
	`ALTER TABLE frames ADD COLUMN etag TEXT NOT NULL DEFAULT '';`,
}

func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating data folder %s: %w", dir, err)
	}
	path := filepath.Join(dir, "framefarm.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(ON)")
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	if err := migrate(db, path); err != nil {
		db.Close()
		return nil, err
	}
	st := &store{db: db}
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&st.insEvent, `INSERT INTO events (job_id, seq, fseq, unix_ms, kind, set_idx, node, detail) VALUES (?,?,?,?,?,?,?,?)`},
		{&st.updSet, `UPDATE sets SET state=?, node=?, token=?, failed_on=?, last_error=?, part=? WHERE job_id=? AND idx=?`},
		{&st.updJob, `UPDATE jobs SET state=?, reason=?, next_token=?, last_seq=?, priority=?, finished_ms=? WHERE id=?`},
	} {
		if *p.stmt, err = db.Prepare(p.sql); err != nil {
			db.Close()
			return nil, fmt.Errorf("preparing %s: %w", path, err)
		}
	}
	return st, nil
}

// migrate brings the database to the newest schema, each step in its own
// transaction with the version it makes.
func migrate(db *sql.DB, path string) error {
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		return fmt.Errorf("reading %s (is another coordinator using this --data folder?): %w", path, err)
	}
	if v > len(migrations) {
		return fmt.Errorf("%s was written by a newer framefarm (schema %d; this one knows up to %d): run that version, or use another --data folder", path, v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		tx, err := db.Begin()
		if err != nil {
			return fmt.Errorf("preparing %s (is another coordinator using this --data folder?): %w", path, err)
		}
		if _, err := tx.Exec(migrations[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("updating %s to schema %d: %w", path, v+1, err)
		}
		if _, err := tx.Exec(fmt.Sprintf(`PRAGMA user_version = %d`, v+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("updating %s to schema %d: %w", path, v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("updating %s to schema %d: %w", path, v+1, err)
		}
	}
	return nil
}

func (s *store) Close() error { return s.db.Close() }

// jobRecord is a job's row: what does not change as the sets move.
type jobRecord struct {
	ID          string
	Name        string
	Created     time.Time
	Finished    time.Time // zero until done, failed or cancelled
	FramesDir   string
	OutPath     string
	Settings    jobSettings
	Fingerprint string
	FinalName   string
	FinalSize   int64
	FinalSHA    string
}

type frameRecord struct {
	Number  int64
	Name    string
	Size    int64
	ModTime time.Time
	// Dev and Ino identify the file as the scan found it (0 for jobs of
	// versions before they were recorded).
	Dev, Ino uint64
	// ETag identifies the object of a frame in a bucket ("" in a folder).
	ETag string
}

// insertJob writes a new job's rows.
func insertJob(ctx context.Context, tx *sql.Tx, jr *jobRun) error {
	rec, job := jr.rec, jr.job
	settings, err := json.Marshal(rec.Settings)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO jobs (id, name, created_ms, frames_dir, out_path, settings, fingerprint, state, priority) VALUES (?,?,?,?,?,?,?,?,?)`,
		rec.ID, rec.Name, rec.Created.UnixMilli(), rec.FramesDir, rec.OutPath, string(settings), rec.Fingerprint, job.State, job.Priority); err != nil {
		return err
	}
	ins, err := tx.PrepareContext(ctx, `INSERT INTO frames (job_id, pos, number, name, size, mtime_ns, dev, ino, etag) VALUES (?,?,?,?,?,?,?,?,?)`)
	if err != nil {
		return err
	}
	defer ins.Close()
	for i, f := range jr.frames {
		if _, err := ins.ExecContext(ctx, rec.ID, i, f.Number, f.Name, f.Size, f.ModTime.UnixNano(), int64(f.Dev), int64(f.Ino), f.ETag); err != nil {
			return err
		}
	}
	for _, st := range job.Sets {
		if _, err := tx.ExecContext(ctx, `INSERT INTO sets (job_id, idx, first, count, state) VALUES (?,?,?,?,?)`,
			rec.ID, st.Index, st.First, st.Count, string(st.State)); err != nil {
			return err
		}
	}
	return nil
}

// write commits a batch of changes in one transaction.
func (s *store) write(ctx context.Context, b *batch) error {
	for _, d := range b.dirs {
		if err := atomicfile.SyncDir(d); err != nil {
			return fmt.Errorf("saving state: %w", err)
		}
	}
	return s.tx(ctx, func(tx *sql.Tx) error { return writeBatch(ctx, tx, s, b) })
}

func writeBatch(ctx context.Context, tx *sql.Tx, s *store, b *batch) error {
	for _, jr := range b.created {
		if err := insertJob(ctx, tx, jr); err != nil {
			return err
		}
	}
	if len(b.events) > 0 {
		ins := tx.StmtContext(ctx, s.insEvent)
		for _, e := range b.events {
			if _, err := ins.ExecContext(ctx, e.JobID, e.Seq, e.FSeq, e.At.UnixMilli(), e.Kind, e.Set, e.Node, e.Detail); err != nil {
				return err
			}
		}
	}
	upd, updJob := tx.StmtContext(ctx, s.updSet), tx.StmtContext(ctx, s.updJob)
	for _, id := range b.order {
		jb := b.jobs[id]
		for _, r := range jb.sets {
			if _, err := upd.ExecContext(ctx, string(r.State), r.Node, r.Token, r.FailedOn, r.LastError, r.Part, id, r.Index); err != nil {
				return err
			}
		}
		j := jb.job
		if _, err := updJob.ExecContext(ctx, j.State, j.Reason, j.NextToken, j.LastSeq, j.Priority, j.FinishedMS, id); err != nil {
			return err
		}
		for _, f := range jb.frames {
			if _, err := tx.ExecContext(ctx, `UPDATE frames SET size=?, mtime_ns=?, dev=?, ino=?, etag=? WHERE job_id=? AND pos=?`, f.Size, f.ModTime.UnixNano(), int64(f.Dev), int64(f.Ino), f.ETag, id, f.Pos); err != nil {
				return err
			}
		}
		if jb.fingerprint != "" {
			if _, err := tx.ExecContext(ctx, `UPDATE jobs SET fingerprint=? WHERE id=?`, jb.fingerprint, id); err != nil {
				return err
			}
		}
	}
	for _, id := range b.removed {
		// Its job_deleted event stays: the farm's stream keeps its place.
		if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE job_id=? AND kind!='job_deleted'`, id); err != nil {
			return err
		}
		for _, table := range []string{"sets", "frames"} {
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+table+` WHERE job_id=?`, id); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM jobs WHERE id=?`, id); err != nil {
			return err
		}
	}
	return nil
}

func (s *store) setFinal(ctx context.Context, id, name string, size int64, sha string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE jobs SET final_name=?, final_size=?, final_sha=? WHERE id=?`, name, size, sha, id)
	return err
}

func (s *store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("saving state: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("saving state: %w", err)
	}
	return nil
}

// loadJobs reads every job of the farm, and the farm's last event number.
func (s *store) loadJobs(ctx context.Context) ([]*jobRun, uint64, error) {
	var last sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(fseq) FROM events`).Scan(&last); err != nil {
		return nil, 0, fmt.Errorf("loading the farm's events: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM jobs ORDER BY created_ms, id`)
	if err != nil {
		return nil, 0, fmt.Errorf("loading the farm's jobs: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, 0, err
		}
		ids = append(ids, id)
	}
	rows.Close()
	var runs []*jobRun
	for _, id := range ids {
		rec, frames, j, err := s.loadJob(ctx, id)
		if err != nil {
			return nil, 0, err
		}
		runs = append(runs, &jobRun{rec: rec, frames: frames, job: j})
	}
	return runs, uint64(last.Int64), nil
}

func (s *store) loadJob(ctx context.Context, id string) (jobRecord, []frameRecord, *job.Job, error) {
	var rec jobRecord
	var settings string
	var created, finished int64
	j := &job.Job{ID: id, NodeFailures: map[string]int{}}
	err := s.db.QueryRowContext(ctx, `SELECT name, created_ms, finished_ms, frames_dir, out_path, settings, fingerprint, state, reason, priority, next_token, last_seq, final_name, final_size, final_sha FROM jobs WHERE id=?`, id).
		Scan(&rec.Name, &created, &finished, &rec.FramesDir, &rec.OutPath, &settings, &rec.Fingerprint, &j.State, &j.Reason, &j.Priority, &j.NextToken, &j.LastSeq, &rec.FinalName, &rec.FinalSize, &rec.FinalSHA)
	if err != nil {
		return rec, nil, nil, fmt.Errorf("loading job %s: %w", id, err)
	}
	rec.ID, rec.Created = id, time.UnixMilli(created)
	if finished > 0 {
		rec.Finished = time.UnixMilli(finished)
	}
	if rec.Name == "" {
		rec.Name = jobName(rec.FramesDir)
	}
	if err := json.Unmarshal([]byte(settings), &rec.Settings); err != nil {
		return rec, nil, nil, fmt.Errorf("loading job %s settings: %w", id, err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT number, name, size, mtime_ns, dev, ino, etag FROM frames WHERE job_id=? ORDER BY pos`, id)
	if err != nil {
		return rec, nil, nil, err
	}
	var frames []frameRecord
	for rows.Next() {
		var f frameRecord
		var mt, dev, ino int64
		if err := rows.Scan(&f.Number, &f.Name, &f.Size, &mt, &dev, &ino, &f.ETag); err != nil {
			rows.Close()
			return rec, nil, nil, err
		}
		f.ModTime, f.Dev, f.Ino = time.Unix(0, mt), uint64(dev), uint64(ino)
		frames = append(frames, f)
	}
	rows.Close()
	rows, err = s.db.QueryContext(ctx, `SELECT idx, first, count, state, node, token, failed_on, last_error, part FROM sets WHERE job_id=? ORDER BY idx`, id)
	if err != nil {
		return rec, nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		st := &job.Set{}
		var state, failed, part string
		if err := rows.Scan(&st.Index, &st.First, &st.Count, &state, &st.Node, &st.Token, &failed, &st.LastError, &part); err != nil {
			return rec, nil, nil, err
		}
		st.State = job.State(state[0])
		_ = json.Unmarshal([]byte(failed), &st.FailedOn)
		_ = json.Unmarshal([]byte(part), &st.Part)
		for _, n := range job.Distinct(st.FailedOn) {
			j.NodeFailures[n]++
		}
		j.Sets = append(j.Sets, st)
	}
	return rec, frames, j, rows.Err()
}

// events returns a job's events after seq, or with jobID "" the farm's
// after the farm-wide fseq.
func (s *store) events(ctx context.Context, jobID string, after uint64, limit int) ([]job.Event, error) {
	q, args := `SELECT job_id, seq, fseq, unix_ms, kind, set_idx, node, detail FROM events WHERE job_id=? AND seq>? ORDER BY seq LIMIT ?`, []any{jobID, after, limit}
	if jobID == "" {
		q, args = `SELECT job_id, seq, fseq, unix_ms, kind, set_idx, node, detail FROM events WHERE fseq>? ORDER BY fseq LIMIT ?`, []any{after, limit}
	}
	return s.queryEvents(ctx, q, args...)
}

// queryEvents runs q, which selects the columns of events, and reads them.
func (s *store) queryEvents(ctx context.Context, q string, args ...any) ([]job.Event, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []job.Event
	for rows.Next() {
		var e job.Event
		var ms int64
		if err := rows.Scan(&e.JobID, &e.Seq, &e.FSeq, &ms, &e.Kind, &e.Set, &e.Node, &e.Detail); err != nil {
			return nil, err
		}
		e.At = time.UnixMilli(ms)
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *store) eventsOfKinds(ctx context.Context, kinds ...job.EventKind) (map[string][]job.Event, error) {
	if len(kinds) == 0 {
		return nil, nil
	}
	args := make([]any, len(kinds))
	for i, k := range kinds {
		args[i] = string(k)
	}
	q := `SELECT job_id, seq, fseq, unix_ms, kind, set_idx, node, detail FROM events WHERE kind IN (?` +
		strings.Repeat(",?", len(kinds)-1) + `) ORDER BY job_id, seq`
	evs, err := s.queryEvents(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	out := map[string][]job.Event{}
	for _, e := range evs {
		out[e.JobID] = append(out[e.JobID], e)
	}
	return out, nil
}
