# loss_curve.gp - kvprobe's training curve from the CSV train_probe.py writes.
# usage (from the repository root): gnuplot models/probe/loss_curve.gp
#   or gnuplot -e "csv='run.csv'; out='run.png'" models/probe/loss_curve.gp
# Columns: step,seconds,length,loss,loss_answer,acc_answer,loss_lm,lr,loss_copy,stage
# (each stage's steps continue the count of the one before).
if (!exists("csv")) csv = 'models/probe/kvprobe-train-loss.csv'
if (!exists("out")) out = 'models/probe/loss_curve.png'
set terminal pngcairo size 900,520 font ',10'
set output out
set datafile separator ','
set key top right
set grid
set xlabel 'step'
set ylabel 'cross-entropy (nats)'
set y2label 'answer-token accuracy (teacher-forced)'
set y2range [0:1]
set y2tics 0.2
set ytics nomirror
set logscale y
set yrange [0.01:20]
set title noenhanced "kvprobe (docs/PROBE.md): stage 1 to step 1100, 2 (retrieval mix) from 1101,\n3 (needles restated) from 1902, 4 (keys restated, RULER's needle haystacks) from 2891;\nmeans of 25"
set arrow from 1101, graph 0 to 1101, graph 1 nohead dt 2 lc rgb '#666666'
set arrow from 1902, graph 0 to 1902, graph 1 nohead dt 2 lc rgb '#666666'
set arrow from 2891, graph 0 to 2891, graph 1 nohead dt 2 lc rgb '#666666'
# running mean over the last n values (step rows are in order)
n = 25
init(x) = (b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = b8 = b9 = b10 = b11 = b12 = b13 = b14 = b15 = b16 = b17 = b18 = b19 = b20 = b21 = b22 = b23 = b24 = x, 0)
shift(x) = (b24 = b23, b23 = b22, b22 = b21, b21 = b20, b20 = b19, b19 = b18, b18 = b17, b17 = b16, b16 = b15, b15 = b14, \
            b14 = b13, b13 = b12, b12 = b11, b11 = b10, b10 = b9, b9 = b8, b8 = b7, b7 = b6, b6 = b5, b5 = b4, b4 = b3, \
            b3 = b2, b2 = b1, b1 = b0, b0 = x)
mean(x) = (shift(x), (b0 + b1 + b2 + b3 + b4 + b5 + b6 + b7 + b8 + b9 + b10 + b11 + b12 + b13 + b14 + b15 + b16 + b17 + \
           b18 + b19 + b20 + b21 + b22 + b23 + b24) / n)
# answers start when the drills-only warm-up ends (step 175)
plot csv using 1:5 every ::181 with points pt 7 ps 0.2 lc rgb '#f4a582' notitle, \
     csv using 1:7 every ::1 with points pt 7 ps 0.2 lc rgb '#92c5de' notitle, \
     z = init(2.5), csv using 1:(mean($5)) every ::181 with lines lw 2 lc rgb '#b2182b' title 'answer tokens', \
     z = init(10.4), csv using 1:(mean($7)) every ::1 with lines lw 2 lc rgb '#2166ac' title 'text positions', \
     z = init(0.6), csv using 1:(mean($6)) every ::181 axes x1y2 with lines lw 2 lc rgb '#1b7837' title 'answer accuracy (right axis)', \
     csv using 1:($9 > 0 ? $9 : NaN) every ::1 with points pt 7 ps 0.3 lc rgb '#984ea3' title 'copying drills (steps that had them)'
