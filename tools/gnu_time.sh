# Reading GNU time's `-v` report (sourced by tools/memory_curve.sh and tools/memory_parts.sh).

# peak FILE: the peak resident memory of the command, MiB.
peak() { sed -n 's/^\tMaximum resident set size (kbytes): //p' "$1" | awk '{printf "%d", $1 / 1024}'; }
# wall FILE: its wall-clock seconds, to a tenth.
wall() { sed -n 's/^\tElapsed (wall clock) time (h:mm:ss or m:ss): //p' "$1" | awk -F: '{s=0; for (i=1;i<=NF;i++) s=s*60+$i; printf "%.1f", s}'; }
