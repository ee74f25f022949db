package node

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// loadMeter reports the machine's CPU use since its last sample, from
// /proc/stat (0 where that is not available).
type loadMeter struct {
	mu         sync.Mutex
	idle, busy uint64
}

func newLoadMeter() *loadMeter {
	m := &loadMeter{}
	m.idle, m.busy = readCPU()
	return m
}

// sample returns the CPU load (0..1) and the free cores it implies.
func (m *loadMeter) sample() (load, freeCores float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	idle, busy := readCPU()
	di, db := idle-m.idle, busy-m.busy
	m.idle, m.busy = idle, busy
	if di+db == 0 {
		return 0, float64(runtime.NumCPU())
	}
	load = float64(db) / float64(di+db)
	return load, float64(runtime.NumCPU()) * (1 - load)
}

func readCPU() (idle, busy uint64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0
	}
	for i, f := range fields[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		} else {
			busy += v
		}
	}
	return idle, busy
}
