//go:build storage

package main

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/framefarm/framefarm/internal/storage/storagetest"
)

// The bucket data path under faults (issue 15): frames read by nodes from
// pre-signed GETs, parts put by nodes at pre-signed PUTs and read back by
// the coordinator, all through a storagetest.Proxy in front of versitygw
// (the coordinator signs for the proxy's address, so the URLs it hands
// out go through it too).

var (
	bucketBusy      = regexp.MustCompile(`the bucket is busy; trying again`)
	framesFellBack  = regexp.MustCompile(`reading the frames from the bucket failed; streaming`)
	putFellBack     = regexp.MustCompile(`putting the part into the bucket failed; uploading it through the coordinator`)
	takeFellBack    = regexp.MustCompile(`the coordinator could not take the part from the bucket; uploading it through the coordinator`)
	partRefusedNode = regexp.MustCompile(`part refused by the coordinator`)
)

// proxiedBucketFarm starts an S3 server with the given number of frames
// put in the bucket "frames" under sh/, a proxy in front of it, and a
// standing farm whose --storage goes through the proxy. It returns the
// proxy, the farm, its metrics address and the frames' reference.
func proxiedBucketFarm(t *testing.T, frames int) (s3 *storagetest.S3, p *storagetest.Proxy, f *farm, metrics string, want []string) {
	t.Helper()
	s3, want = framesInBucket(t, frames, "sh/")
	p = storagetest.StartProxy(t, s3)
	f, metrics = storageFarm(t, p.URL("parts", "farm/"))
	return s3, p, f, metrics, want
}

// submitProxied submits the frames with --frames through p. The submit's
// scan (a listing, ranged GETs of the headers) is done when it returns:
// faults planned after it meet the render only.
func submitProxied(t *testing.T, f *farm, p *storagetest.Proxy, sets int) string {
	t.Helper()
	return f.submit(t, "--frames", p.URL("frames", "sh/"), "--sets", strconv.Itoa(sets), "--codec", "ffv1")
}

// noPartsLeft checks that the parts are gone from the bucket: the
// coordinator deletes a part after answering its upload, with its S3
// client's retries (a delete the bucket answered 500 waits its backoff), so
// the job may be done a moment before.
func noPartsLeft(t *testing.T, s3 *storagetest.S3) {
	t.Helper()
	emptied(t, s3, "parts", "farm/parts", 10*time.Second, "parts left in the bucket after the join")
}

// waitUntil polls cond until it holds, and fails the test with what if it
// does not within d.
func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
	}
}

// emptied waits up to within for nothing to be left in bucket under
// prefix (deletes run after the answer), and says what is left otherwise.
func emptied(t *testing.T, s3 *storagetest.S3, bucket, prefix string, within time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		left := bucketKeys(t, s3, bucket, prefix)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: %v", what, left)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nodeLines counts the lines matching re in the nodes' logs.
func nodeLines(nodes []*farmNode, re *regexp.Regexp) int {
	n := 0
	for _, nd := range nodes {
		n += len(logLines(nd.node, 0, re))
	}
	return n
}

// waitNodeLine waits up to d for a line matching re in a node's log.
func waitNodeLine(t *testing.T, nodes []*farmNode, re *regexp.Regexp, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for nodeLines(nodes, re) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no node logged %q after %s", re, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// noSetLost: every set accepted once, none failed or given back for a
// failure, and the job done.
func noSetLost(t *testing.T, w *watcher, sets int) {
	t.Helper()
	evs := w.events()
	checkEvents(t, evs, sets)
	for _, e := range evs {
		if e.Kind == "set_failed" || e.Kind == "node_excluded" || e.Kind == "job_failed" || e.Kind == "lease_expired" {
			t.Errorf("event %s set %d node %s: %s", e.Kind, e.SetIndex, e.Node, e.Detail)
		}
	}
}

// TestStorageBucketBusyRetried: the bucket answers 503 SlowDown or 500
// InternalError to the coordinator's listing of the frames at submit, to
// some nodes' GETs of frames and PUTs of parts, and to the coordinator's
// GETs and HEADs of parts, no more often than the retries of each take:
// the nodes try again after a pause (logged) and never fall back to the
// coordinator, the coordinator's S3 client retries its own; the video is
// frame-exact, no set lost, no part left behind.
func TestStorageBucketBusyRetried(t *testing.T) {
	needFFmpeg(t)
	const sets = 6
	s3, p, f, metrics, want := proxiedBucketFarm(t, 48)
	w := watch(t, f.addr)
	// The submit's listing of the frames (the first request of its scan).
	p.FailNextUnder(2, http.MethodGet, "/frames", http.StatusServiceUnavailable, "SlowDown")
	id := submitProxied(t, f, p, sets)
	if p.Faulted() != 2 {
		t.Fatalf("%d of the submit's requests faulted, want 2", p.Faulted())
	}
	before := p.Requests()
	// Two of each kind: no one request meets three (a node tries 3 times,
	// the coordinator's S3 client 3 times too).
	p.FailNextUnder(1, http.MethodGet, "/frames/sh/", http.StatusServiceUnavailable, "SlowDown")
	p.FailNextUnder(1, http.MethodGet, "/frames/sh/", http.StatusInternalServerError, "InternalError")
	p.FailNextUnder(1, http.MethodPut, "/parts/farm/", http.StatusServiceUnavailable, "SlowDown")
	p.FailNextUnder(1, http.MethodPut, "/parts/farm/", http.StatusInternalServerError, "InternalError")
	p.FailNextUnder(2, http.MethodGet, "/parts/farm/", http.StatusServiceUnavailable, "SlowDown")
	p.FailNextUnder(2, http.MethodHead, "/parts/farm/", http.StatusInternalServerError, "InternalError")
	var nodes []*farmNode
	for _, name := range []string{"a", "b"} {
		nodes = append(nodes, addNode(t, f, name, nodeOpts{framesFrom: "auto", noOnce: true}))
	}
	f.fetchExact(t, id, want)
	noSetLost(t, w, sets)

	if n := nodeLines(nodes, bucketBusy); n != 4 {
		t.Errorf("the nodes logged %d retries, want 4 (2 GETs of frames, 2 PUTs of parts)", n)
	}
	for _, re := range []*regexp.Regexp{framesFellBack, putFellBack, takeFellBack, partRefusedNode} {
		if n := nodeLines(nodes, re); n != 0 {
			t.Errorf("%d node log lines %q: a retry should have done", n, re)
		}
	}
	nothingThroughCoordinator(t, metrics, "")
	// After the sweep of the parts, whose deletes meet the HEAD faults.
	noPartsLeft(t, s3)
	if p.Faulted() != 10 {
		t.Errorf("%d requests faulted, want the 10 planned", p.Faulted())
	}
	t.Logf("%d requests through the proxy for the render, %d faulted; node retries logged:\n%s",
		p.Requests()-before, p.Faulted(), strings.Join(append(logLines(nodes[0].node, 0, bucketBusy), logLines(nodes[1].node, 0, bucketBusy)...), "\n"))
}

// TestStorageBucketBusyFallback: the bucket stays busy (503 SlowDown, 500
// InternalError) past the retries, in turn for the nodes' GETs of frames,
// their PUTs of parts, and the coordinator's GETs of parts: the node
// streams the frames through the coordinator, uploads the part to it, and
// when the coordinator cannot read a part from the bucket, uploads it to
// the coordinator too. The video is frame-exact, no set lost, no part left
// behind in the bucket, and the logs say each of these.
func TestStorageBucketBusyFallback(t *testing.T) {
	needFFmpeg(t)
	const sets = 8
	s3, p, f, metrics, want := proxiedBucketFarm(t, 64)
	w := watch(t, f.addr)
	id := submitProxied(t, f, p, sets)
	// One node, whose sets take a while: each phase below meets sets still
	// to render.
	nodes := []*farmNode{addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true, slow: 300 * time.Millisecond})}

	// The frames: busy until the node gives up on the bucket for a set.
	// Meanwhile the coordinator's own reads of the frames (for the
	// streaming) are refused too: it answers Unavailable and the node
	// waits and asks again.
	p.FailNextUnder(1000, http.MethodGet, "/frames/sh/", http.StatusServiceUnavailable, "SlowDown")
	waitNodeLine(t, nodes, framesFellBack, time.Minute)
	p.Clear()

	// The parts' PUTs: busy until the node uploads one to the coordinator.
	p.FailNextUnder(1000, http.MethodPut, "/parts/farm/", http.StatusInternalServerError, "InternalError")
	waitNodeLine(t, nodes, putFellBack, time.Minute)
	p.Clear()

	// The coordinator's reads of the parts: busy until the node is told
	// the coordinator could not read one.
	p.FailNextUnder(1000, http.MethodGet, "/parts/farm/", http.StatusServiceUnavailable, "SlowDown")
	waitNodeLine(t, nodes, takeFellBack, time.Minute)
	p.Clear()

	f.fetchExact(t, id, want)
	noSetLost(t, w, sets)

	if n := nodeLines(nodes, bucketBusy); n < 2*3 {
		t.Errorf("the node logged %d retries, want at least two for each of the 3 phases", n)
	}
	fams := scrape(t, metrics, "")
	if got := counter(fams, "framefarm_frame_stream_bytes_total"); got <= 0 {
		t.Errorf("no frame bytes streamed through the coordinator")
	}
	if got := counter(fams, "framefarm_part_upload_bytes_total"); got <= 0 {
		t.Errorf("no part uploaded to the coordinator")
	}
	if n := len(logLines(f.coord, 0, regexp.MustCompile(`the part could not be stored: the coordinator's own failure.*SlowDown`))); n == 0 {
		t.Errorf("the coordinator did not log why it could not take the part from the bucket")
	}
	noPartsLeft(t, s3)
	t.Logf("%d requests through the proxy, %d faulted; %d node retries, frames fell back %d, PUTs fell back %d, the coordinator's reads %d; %d sets from the bucket",
		p.Requests(), p.Faulted(), nodeLines(nodes, bucketBusy), nodeLines(nodes, framesFellBack), nodeLines(nodes, putFellBack),
		nodeLines(nodes, takeFellBack), nodeLines(nodes, fromBucket))
	if strings.Contains(f.coord.out.String(), storagetest.Secret) || strings.Contains(nodes[0].node.out.String(), "X-Amz-Signature=") {
		t.Error("a secret or a URL's signature appears in a log")
	}
}

// TestStorageBucketHalfPart: a part half-written to the bucket is never
// taken for the finished one, nor held against the node that rendered it.
// The proxy stores only the first 32 KiB of a node's PUT and answers S3's
// 200, so the node tells the coordinator the part is there; the coordinator
// finds fewer bytes than announced and has the node upload the part it
// holds. The same for a PUT stored with one byte changed (found by its
// SHA-256). Then the proxy cuts a PUT's connection mid-body: the node gets
// no answer and uploads that part to the coordinator. No set is failed or
// rendered twice, and the video is frame-exact.
func TestStorageBucketHalfPart(t *testing.T) {
	needFFmpeg(t)
	const sets = 6
	s3, p, f, metrics, want := proxiedBucketFarm(t, 48)
	w := watch(t, f.addr)
	id := submitProxied(t, f, p, sets)
	p.TruncateNextPut(1, "/parts/farm/", 32<<10)
	p.CorruptNextPut(1, "/parts/farm/", 20000)
	p.CutNextPut(1, "/parts/farm/", 32<<10)
	nodes := []*farmNode{addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true})}
	f.fetchExact(t, id, want)
	noSetLost(t, w, sets)

	evs := w.events()
	if n := countKind(evs, "set_granted"); n != sets {
		t.Errorf("%d grants, want %d: a set rendered again", n, sets)
	}
	if p.Faulted() != 3 {
		t.Errorf("%d PUTs faulted, want 3", p.Faulted())
	}
	notAnnounced := logLines(f.coord, 0, regexp.MustCompile(`the part in the bucket is not what the node announced`))
	if len(notAnnounced) != 2 {
		t.Errorf("the coordinator found %d parts in the bucket not as announced, want 2 (truncated, changed):\n%s", len(notAnnounced), strings.Join(notAnnounced, "\n"))
	}
	for _, says := range []string{"the bucket holds 32768 bytes", "SHA-256 mismatch"} {
		if !strings.Contains(strings.Join(notAnnounced, "\n"), says) {
			t.Errorf("the coordinator's log does not say %q", says)
		}
	}
	if n := nodeLines(nodes, takeFellBack); n != 2 {
		t.Errorf("the node uploaded %d parts the bucket held wrong, want 2", n)
	}
	if n := nodeLines(nodes, putFellBack); n != 1 {
		t.Errorf("the node logged %d PUTs given up, want 1 (the cut one)", n)
	}
	if n := nodeLines(nodes, partRefusedNode); n != 0 {
		t.Errorf("the node logged %d refused parts: the bucket's fault was held against it", n)
	}
	if got := counter(scrape(t, metrics, ""), "framefarm_part_upload_bytes_total"); got <= 0 {
		t.Errorf("no part was uploaded to the coordinator")
	}
	noPartsLeft(t, s3)
	t.Logf("coordinator:\n%s", strings.Join(notAnnounced, "\n"))
}

// TestStorageTidiesCancelledJob: the parts a cancelled job's nodes put in
// the bucket are swept once no node can still be putting one (twice the
// heartbeat timeout), though the job is never joined nor deleted; reset,
// it still renders frame-exact from the parts the coordinator kept.
func TestStorageTidiesCancelledJob(t *testing.T) {
	needFFmpeg(t)
	s3, want := framesInBucket(t, 96, "sh/")
	f, _ := bucketFarm(t, s3)
	w := watch(t, f.addr)
	id := f.submit(t, "--frames", s3.URL("frames", "sh/"), "--sets", "12", "--codec", "ffv1")
	addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true, slow: 300 * time.Millisecond})
	w.waitFor(t, "a part taken", time.Minute, kind("part_accepted", -1, ""))
	runCmd(t, binary, "cancel", id, "--coordinator", f.addr)
	prefix := "farm/parts/" + id
	if left := bucketKeys(t, s3, "parts", prefix); len(left) == 0 {
		t.Fatal("no part of the cancelled job in the bucket to sweep")
	} else {
		t.Logf("%d parts in the bucket after the cancel", len(left))
	}
	emptied(t, s3, "parts", prefix, 30*time.Second, "parts of the cancelled job left in the bucket")
	if !strings.Contains(f.coord.out.String(), "removed objects no job needs from the bucket") {
		t.Error("the coordinator did not say it swept the parts")
	}
	runCmd(t, binary, "reset", id, "--coordinator", f.addr)
	f.fetchExact(t, id, want)
}

// finalCopyRetrying renders the proxied frames on one node while the bucket
// answers the final's PUT into --storage 503 SlowDown, and returns once the
// coordinator retries that copy, with a watcher of the farm's events.
func finalCopyRetrying(t *testing.T, f *farm, p *storagetest.Proxy) (id string, w *watcher) {
	t.Helper()
	w = watch(t, f.addr)
	p.FailNextUnder(1<<20, http.MethodPut, "/parts/farm/finals/", http.StatusServiceUnavailable, "SlowDown")
	id = submitProxied(t, f, p, 2)
	addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true})
	w.waitFor(t, "the job done", 2*time.Minute, kind("job_done", -1, ""))
	waitOutput(t, f.coord, "copying the final video to --storage failed; retrying", time.Minute)
	return id, w
}

// TestStorageFinalCopyResumed: the coordinator is killed (SIGKILL) while the
// bucket refuses the final's copy into --storage (503 SlowDown, retried);
// started again with the bucket back, it resumes the copy, and the object
// is the bytes fetch gives.
func TestStorageFinalCopyResumed(t *testing.T) {
	needFFmpeg(t)
	s3, p, f, _, want := proxiedBucketFarm(t, 16)
	id, w := finalCopyRetrying(t, f, p)
	_ = f.coord.cmd.Process.Kill()
	<-f.coord.done
	p.Clear()
	f.coord, _ = start(t, "coordinator-again", farmReady, append(append([]string{}, f.coordArgs...), "--listen", f.addr)...)
	out := f.fetchExact(t, id, want)
	key := "farm/finals/" + id + "/final.mkv"
	storedFinal(t, w, id, "s3://parts/"+key, s3.URL("parts", key), out)
	if !strings.Contains(f.coord.out.String(), "resuming the copy of a final that the stop cut off") {
		t.Error("the coordinator did not say it resumed the copy")
	}
	if n := countKind(w.events(), "final_stored"); n != 1 {
		t.Errorf("%d final_stored events, want 1", n)
	}
}

// TestStorageDeleteSweptLater: the bucket refuses the deletes when a job is
// deleted (503 SlowDown, past the S3 client's retries), so its final stays
// there; once the bucket takes deletes again, the coordinator removes it
// on its own, without another delete.
func TestStorageDeleteSweptLater(t *testing.T) {
	needFFmpeg(t)
	s3, p, f, _, want := proxiedBucketFarm(t, 16)
	w := watch(t, f.addr)
	id := submitProxied(t, f, p, 2)
	addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true})
	out := f.fetchExact(t, id, want)
	key := "farm/finals/" + id + "/final.mkv"
	storedFinal(t, w, id, "s3://parts/"+key, s3.URL("parts", key), out)
	p.FailNextUnder(1<<20, http.MethodDelete, "/parts/farm/finals/", http.StatusServiceUnavailable, "SlowDown")
	runCmd(t, binary, "delete", id, "--coordinator", f.addr)
	waitOutput(t, f.coord, "deleting an object from the bucket failed; it stays there for now", time.Minute)
	if left := bucketKeys(t, s3, "parts", "farm/finals/"+id); len(left) != 1 {
		t.Fatalf("after the refused deletes the bucket holds %v, want the final", left)
	}
	p.Clear()
	emptied(t, s3, "parts", "farm/finals/"+id, 30*time.Second, "the deleted job's final left in the bucket")
}

// TestStorageDeleteDuringFinalPut: a done job is deleted while its final is
// being put into --storage, and the server stores that object only after
// the coordinator gave up on the put (the proxy holds the whole PUT for 3 s
// and forwards it anyway). The delete's sweep comes back for it: nothing of
// the job stays in the bucket.
func TestStorageDeleteDuringFinalPut(t *testing.T) {
	needFFmpeg(t)
	s3, p, f, _, _ := proxiedBucketFarm(t, 16)
	w := watch(t, f.addr)
	id := submitProxied(t, f, p, 2)
	p.LateNextPut(1, "/parts/farm/finals/", 3*time.Second)
	addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true})
	w.waitFor(t, "the job done", 2*time.Minute, kind("job_done", -1, ""))
	waitUntil(t, time.Minute, "the final's PUT into --storage never reached the bucket", func() bool { return p.Faulted() > 0 })
	runCmd(t, binary, "delete", id, "--coordinator", f.addr)
	prefix := "farm/finals/" + id
	waitUntil(t, 30*time.Second, "the held PUT of the final was never stored: the test did not make the late object it is about",
		func() bool { return len(bucketKeys(t, s3, "parts", prefix)) > 0 })
	emptied(t, s3, "parts", prefix, time.Minute, "the deleted job's final, stored after the delete, left in the bucket")
}

// TestStorageUploadDuringDelete: the folder of a deleted job's upload is
// submitted --upload again while the delete is still sweeping that upload
// from the bucket (the proxy holds the sweep's first DELETE for 4 s). The
// new upload waits for the sweep and sends every frame again, rather than
// finding frames about to go; its job renders frame-exact.
func TestStorageUploadDuringDelete(t *testing.T) {
	needFFmpeg(t)
	s3 := storagetest.StartS3(t, "parts")
	p := storagetest.StartProxy(t, s3)
	f, _ := storageFarm(t, p.URL("parts", "farm/"))
	frames := filepath.Join(t.TempDir(), "frames")
	genFrames(t, frames, 16, 1, "320x240")
	want := reference(t, frames, 1)
	w := watch(t, f.addr)
	first, _ := submitUpload(t, f.addr, frames, "--codec", "ffv1", "--sets", "2")
	addNode(t, f, "a", nodeOpts{framesFrom: "auto", noOnce: true})
	w.waitFor(t, "the first job done", 2*time.Minute, kind("job_done", -1, ""))

	p.DelayNextUnder(1, http.MethodDelete, "/parts/farm/uploads/", 4*time.Second)
	deleted := make(chan error, 1)
	go func() {
		out, err := exec.Command(binary, "delete", first, "--coordinator", f.addr).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		deleted <- err
	}()
	waitUntil(t, 30*time.Second, "the delete never swept the upload", func() bool { return p.Held() > 0 })
	second, said := submitUpload(t, f.addr, frames, "--codec", "ffv1", "--sets", "2")
	if err := <-deleted; err != nil {
		t.Fatalf("delete: %v", err)
	}
	if !strings.Contains(said, "uploaded 16 files") {
		t.Errorf("the upload during the delete said %q, want all 16 frames sent again", said)
	}
	f.fetchExact(t, second, want)
}

// TestStorageFinalCopyReset: a done job is reset --all (frame 5 replaced) while
// the bucket refuses its final's copy into --storage (503, retried). The
// copy of the old final stops; with the bucket taking copies again, the
// new final is stored, once, and no late copy of the old one lands over it.
func TestStorageFinalCopyReset(t *testing.T) {
	needFFmpeg(t)
	s3 := storagetest.StartS3(t, "frames", "parts")
	local := filepath.Join(t.TempDir(), "frames")
	genFrames(t, local, 16, 1, "320x240")
	putFrames(t, s3, local, "frames", "sh/")
	p := storagetest.StartProxy(t, s3)
	f, _ := storageFarm(t, p.URL("parts", "farm/"))
	id, w := finalCopyRetrying(t, f, p)

	one, err := os.ReadFile(filepath.Join(local, "f_0001.png"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(local, "f_0005.png"), one, 0o644); err != nil {
		t.Fatal(err)
	}
	putFramesAt(t, local, func(name string) string { return s3.URL("frames", "sh/"+name) })
	want := reference(t, local, 1)
	runCmd(t, binary, "reset", id, "--all", "--coordinator", f.addr)
	waitOutput(t, f.coord, "job reset or deleted before its final was copied to --storage; the copy stopped", time.Minute)
	p.Clear()

	out := f.fetchExact(t, id, want)
	key := "farm/finals/" + id + "/final.mkv"
	storedFinal(t, w, id, "s3://parts/"+key, s3.URL("parts", key), out)
	if n := countKind(w.events(), "final_stored"); n != 1 {
		t.Errorf("%d final_stored events, want 1 (the new final's)", n)
	}
}
