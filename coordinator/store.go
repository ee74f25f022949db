package coordinator

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// store keeps the coordinator's state in SQLite. Changes are committed in
// batches (see batch), each one transaction (synchronous=FULL), before any
// of them is acknowledged.
type store struct {
	db *sql.DB
	// The statements of every change, prepared once.
	insEvent, updSet, updJob *sql.Stmt
}

const schema = `
CREATE TABLE IF NOT EXISTS jobs (
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
);`

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
	if _, err := db.Exec(schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("preparing %s (is another coordinator using this --data folder?): %w", path, err)
	}
	st := &store{db: db}
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&st.insEvent, `INSERT INTO events (job_id, seq, unix_ms, kind, set_idx, node, detail) VALUES (?,?,?,?,?,?,?)`},
		{&st.updSet, `UPDATE sets SET state=?, node=?, token=?, failed_on=?, last_error=?, part=? WHERE job_id=? AND idx=?`},
		{&st.updJob, `UPDATE jobs SET state=?, reason=?, next_token=?, last_seq=? WHERE id=?`},
	} {
		if *p.stmt, err = db.Prepare(p.sql); err != nil {
			db.Close()
			return nil, fmt.Errorf("preparing %s: %w", path, err)
		}
	}
	return st, nil
}

func (s *store) Close() error { return s.db.Close() }

// jobRecord is a job's row: what does not change as the sets move.
type jobRecord struct {
	ID          string
	Created     time.Time
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
}

func (s *store) createJob(ctx context.Context, rec jobRecord, frames []frameRecord, job *Job, events []Event) error {
	settings, err := json.Marshal(rec.Settings)
	if err != nil {
		return err
	}
	return s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT INTO jobs (id, created_ms, frames_dir, out_path, settings, fingerprint, state) VALUES (?,?,?,?,?,?,?)`,
			rec.ID, rec.Created.UnixMilli(), rec.FramesDir, rec.OutPath, string(settings), rec.Fingerprint, job.State); err != nil {
			return err
		}
		ins, err := tx.Prepare(`INSERT INTO frames (job_id, pos, number, name, size, mtime_ns) VALUES (?,?,?,?,?,?)`)
		if err != nil {
			return err
		}
		defer ins.Close()
		for i, f := range frames {
			if _, err := ins.Exec(rec.ID, i, f.Number, f.Name, f.Size, f.ModTime.UnixNano()); err != nil {
				return err
			}
		}
		for _, st := range job.Sets {
			if _, err := tx.Exec(`INSERT INTO sets (job_id, idx, first, count, state) VALUES (?,?,?,?,?)`,
				rec.ID, st.Index, st.First, st.Count, string(st.State)); err != nil {
				return err
			}
		}
		b := newBatch()
		b.add(job, nil, events)
		return writeBatch(ctx, tx, s, rec.ID, b)
	})
}

// write commits a batch of changes in one transaction.
func (s *store) write(ctx context.Context, jobID string, b *batch) error {
	for _, d := range b.dirs {
		if err := syncDir(d); err != nil {
			return fmt.Errorf("saving state: %w", err)
		}
	}
	return s.tx(ctx, func(tx *sql.Tx) error { return writeBatch(ctx, tx, s, jobID, b) })
}

func writeBatch(ctx context.Context, tx *sql.Tx, s *store, jobID string, b *batch) error {
	if len(b.events) > 0 {
		ins := tx.StmtContext(ctx, s.insEvent)
		for _, e := range b.events {
			if _, err := ins.ExecContext(ctx, jobID, e.Seq, e.At.UnixMilli(), e.Kind, e.Set, e.Node, e.Detail); err != nil {
				return err
			}
		}
	}
	if len(b.sets) > 0 {
		upd := tx.StmtContext(ctx, s.updSet)
		for _, r := range b.sets {
			if _, err := upd.ExecContext(ctx, string(r.State), r.Node, r.Token, r.FailedOn, r.LastError, r.Part, jobID, r.Index); err != nil {
				return err
			}
		}
	}
	_, err := tx.StmtContext(ctx, s.updJob).ExecContext(ctx, b.job.State, b.job.Reason, b.job.NextToken, b.job.LastSeq, jobID)
	return err
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

// findJob returns the newest job of framesDir with the given fingerprint
// (same frames, same settings), or "" when there is none.
func (s *store) findJob(ctx context.Context, framesDir, fingerprint string) (string, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT id FROM jobs WHERE frames_dir=? AND fingerprint=? ORDER BY created_ms DESC LIMIT 1`,
		framesDir, fingerprint).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

func (s *store) loadJob(ctx context.Context, id string) (jobRecord, []frameRecord, *Job, error) {
	var rec jobRecord
	var settings string
	var created int64
	job := &Job{ID: id, NodeFailures: map[string]int{}}
	err := s.db.QueryRowContext(ctx, `SELECT created_ms, frames_dir, out_path, settings, fingerprint, state, reason, next_token, last_seq, final_name, final_size, final_sha FROM jobs WHERE id=?`, id).
		Scan(&created, &rec.FramesDir, &rec.OutPath, &settings, &rec.Fingerprint, &job.State, &job.Reason, &job.NextToken, &job.LastSeq, &rec.FinalName, &rec.FinalSize, &rec.FinalSHA)
	if err != nil {
		return rec, nil, nil, fmt.Errorf("loading job %s: %w", id, err)
	}
	rec.ID, rec.Created = id, time.UnixMilli(created)
	if err := json.Unmarshal([]byte(settings), &rec.Settings); err != nil {
		return rec, nil, nil, fmt.Errorf("loading job %s settings: %w", id, err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT number, name, size, mtime_ns FROM frames WHERE job_id=? ORDER BY pos`, id)
	if err != nil {
		return rec, nil, nil, err
	}
	var frames []frameRecord
	for rows.Next() {
		var f frameRecord
		var mt int64
		if err := rows.Scan(&f.Number, &f.Name, &f.Size, &mt); err != nil {
			rows.Close()
			return rec, nil, nil, err
		}
		f.ModTime = time.Unix(0, mt)
		frames = append(frames, f)
	}
	rows.Close()
	rows, err = s.db.QueryContext(ctx, `SELECT idx, first, count, state, node, token, failed_on, last_error, part FROM sets WHERE job_id=? ORDER BY idx`, id)
	if err != nil {
		return rec, nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		st := &Set{}
		var state, failed, part string
		if err := rows.Scan(&st.Index, &st.First, &st.Count, &state, &st.Node, &st.Token, &failed, &st.LastError, &part); err != nil {
			return rec, nil, nil, err
		}
		st.State = State(state[0])
		_ = json.Unmarshal([]byte(failed), &st.FailedOn)
		_ = json.Unmarshal([]byte(part), &st.Part)
		for _, n := range distinct(st.FailedOn) {
			job.NodeFailures[n]++
		}
		job.Sets = append(job.Sets, st)
	}
	return rec, frames, job, rows.Err()
}

func (s *store) events(ctx context.Context, jobID string, after uint64, limit int) ([]Event, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT seq, unix_ms, kind, set_idx, node, detail FROM events WHERE job_id=? AND seq>? ORDER BY seq LIMIT ?`, jobID, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var ms int64
		if err := rows.Scan(&e.Seq, &ms, &e.Kind, &e.Set, &e.Node, &e.Detail); err != nil {
			return nil, err
		}
		e.At = time.UnixMilli(ms)
		out = append(out, e)
	}
	return out, rows.Err()
}
