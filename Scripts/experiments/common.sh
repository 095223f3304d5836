# Sourced by the experiment scripts: builds `silo` in release, fetches the model and the data sets,
# and prints the machine and its load. Sets $silo.
swift build -c release --product silo >&2
silo=.build/release/silo
"$silo" models fetch smollm2-135m >/dev/null
"$silo" data fetch >/dev/null
echo "== $(lscpu | sed -n 's/^Model name: *//p'); load: $(uptime | sed 's/.*load average: //')" >&2
