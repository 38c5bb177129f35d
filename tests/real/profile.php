<?php
// vessel-sync test kit (never shipped): where one record's time goes inside Moodle, for the
// ignored test real::plugin::profile. php profile.php COURSE-IDNUMBER USERNAME-PREFIX MODE, with
// MODE single (Moodle's single-record completion write), bulk (its bulk form, then the event
// and the course-completion review timed apart) or execute (the plugin's function).
define('CLI_SCRIPT', true);
require(__DIR__ . '/config.php');
require_once($CFG->libdir . '/completionlib.php');
\core\session\manager::set_user(get_admin());
$course = $DB->get_record('course', ['idnumber' => $argv[1]], '*', MUST_EXIST);
$users = array_values($DB->get_records_sql("SELECT id, idnumber FROM {user} WHERE username LIKE ?", [$argv[2] . '%']));
$modinfo = get_fast_modinfo($course, -1);
$cms = array_values(array_filter($modinfo->get_cms(), fn($c) => $c->completion == 1));
$mode = $argv[3];
$T = [];
$tick = function($k, $t0) use (&$T) { $T[$k] = ($T[$k] ?? 0) + microtime(true) - $t0; };
$all = microtime(true);
$n = 0;
foreach ($users as $i => $u) {
    $cm = $cms[$i % count($cms)];
    if ($mode === 'execute') {
        continue;
    }
    $t = microtime(true);
    $tx = $DB->start_delegated_transaction();
    $tick('tx', $t);
    $t = microtime(true);
    is_enrolled(context_course::instance($course->id), $u->id, '', false);
    $tick('enrolled', $t);
    $t = microtime(true);
    $completion = new completion_info($course);
    $completion->is_enabled($cm);
    $data = $DB->get_record('course_modules_completion', ['coursemoduleid' => $cm->id, 'userid' => $u->id]) ?: (object)['id'=>0,'coursemoduleid'=>$cm->id,'userid'=>$u->id,'completionstate'=>0,'overrideby'=>null,'timemodified'=>0];
    $data->viewed = 0;
    $tick('read', $t);
    $t = microtime(true);
    \core_courseformat\base::session_cache_reset($course);
    $tick('session_cache_reset', $t);
    $data->completionstate = 1; $data->timemodified = 1700000000; $data->overrideby = 2;
    $t = microtime(true);
    $completion->internal_set_data($cm, $data, $mode === 'bulk');
    $tick('internal_set_data', $t);
    if ($mode === 'bulk') {
        $t = microtime(true);
        $event = \core\event\course_module_completion_updated::create(['objectid' => $data->id,
            'context' => context_module::instance($cm->id), 'relateduserid' => $u->id,
            'other' => ['relateduserid' => $u->id, 'overrideby' => 2, 'completionstate' => 1]]);
        $event->add_record_snapshot('course_modules_completion', $data);
        $event->trigger();
        $tick('event', $t);
        $t = microtime(true);
        $id = \core_completion\api::mark_course_completions_activity_criteria(['userid' => $u->id, 'courseid' => $course->id]);
        if ($id) { aggregate_completions($id); }
        $tick('course_completion', $t);
    }
    $t = microtime(true);
    $tx->allow_commit();
    $tick('commit', $t);
    $n++;
}
if ($mode === 'execute') {
    $recs = [];
    foreach ($users as $i => $u) {
        $cm = $cms[$i % count($cms)];
        $recs[] = ['ref' => "r$i", 'kind' => 'completion', 'course' => $course->idnumber, 'activity' => $cm->idnumber ?: ($cm->modname . ':' . $cm->name), 'user' => $u->idnumber, 'value' => '1', 'time' => 1700000000, 'source' => 'prof'];
    }
    $t = microtime(true);
    $out = \local_vesselsync\external\apply_progress::execute($recs);
    $tick('execute', $t);
    $n = count($out);
    $c = array_count_values(array_column($out, 'outcome'));
    echo json_encode($c), "\n";
}
printf("%d records in %.2f s (%.1f ms each)\n", $n, microtime(true) - $all, 1000 * (microtime(true) - $all) / max(1, $n));
foreach ($T as $k => $v) printf("  %-22s %.1f ms/record\n", $k, 1000 * $v / max(1, $n));
