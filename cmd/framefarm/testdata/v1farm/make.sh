cd "$(dirname "$0")"
${FRAMEFARM:?} coordinator --frames frames --data data --codec ffv1 --out final.mkv --sets 4 --listen 127.0.0.1:5701 > coord.out 2> coord.log &
C=$!
sleep 1
${FRAMEFARM:?} ambassador --coordinator 127.0.0.1:5701 --listen 127.0.0.1:5702 2> amb.log &
A=$!
${FRAMEFARM:?} node --ambassador 127.0.0.1:5702 --slots 1 --name fixture-node 2> node.log &
N=$!
for i in $(seq 1 400); do
  n=$(grep -c 'part_accepted' coord.log)
  if [ "$n" -ge 2 ]; then kill -9 $C; echo "killed after $n"; break; fi
  sleep 0.01
done
sleep 0.3; kill $N $A; wait
