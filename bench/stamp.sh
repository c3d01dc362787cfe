#!/usr/bin/env bash
# aria2c's --on-bt-download-complete hook for bench/testbed.sh: records when
# the download ($3, the file's path) completed, beside the file.
date +%s.%N > "$3.done"
