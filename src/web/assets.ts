import { createHash } from 'node:crypto'

/**
 * The dashboard's only two static files, kept in TypeScript so that they ship with the sources
 * (no copy step, no CDN). Each is served under a content hash, so browsers may cache it for a
 * year: a change to the text changes the URL.
 */
const CSS = `
:root{color-scheme:light dark;--fg:#1d2733;--mut:#566272;--bg:#f4f6f8;--card:#fff;--acc:#2459c4;--acc-fg:#fff;--bd:#d5dce4;
--ok:#1f7a4d;--warn:#9a5b00;--bad:#b3261e;--focus:#f0a500;--stripe:#f8fafc}
@media (prefers-color-scheme:dark){:root{--fg:#e6ebf0;--mut:#a3afbc;--bg:#12171d;--card:#1b232c;--acc:#7aa7ff;--acc-fg:#0b1320;--bd:#2f3a47;
--ok:#5fd39a;--warn:#f3b34c;--bad:#ff8a80;--stripe:#1f2831}}
*{box-sizing:border-box}
[hidden]{display:none!important}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--fg)}
a{color:var(--acc)}
:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.skip{position:absolute;left:-9999px;top:0;background:var(--card);padding:.5rem 1rem;z-index:10}
.skip:focus{left:.5rem;top:.5rem}
header.top{display:flex;flex-wrap:wrap;align-items:center;gap:.5rem 1.25rem;padding:.6rem 1rem;background:var(--card);border-bottom:1px solid var(--bd)}
.brand{font-weight:700;letter-spacing:.04em;text-decoration:none;color:var(--fg)}
nav ul{display:flex;gap:1rem;list-style:none;margin:0;padding:0}
nav a{text-decoration:none;padding:.25rem 0}
nav a[aria-current=page]{font-weight:600;border-bottom:2px solid var(--acc)}
.who{margin-left:auto;display:flex;align-items:center;gap:.5rem;min-width:0}
.who .user{overflow:hidden;text-overflow:ellipsis;white-space:nowrap;max-width:12rem;color:var(--mut)}
.who form{margin:0}
main{max-width:72rem;margin:0 auto;padding:1rem}
main:focus{outline:none}
h1{font-size:1.45rem;margin:.5rem 0 1rem}h2{font-size:1.15rem;margin:1.75rem 0 .75rem}h3{font-size:1.05rem;margin:0 0 .35rem}
.panel{background:var(--card);border:1px solid var(--bd);border-radius:10px;padding:1rem 1.25rem}
.narrow{max-width:30rem;margin:2rem auto}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(17rem,1fr));gap:1rem}
.card{background:var(--card);border:1px solid var(--bd);border-radius:10px;padding:1rem;display:flex;flex-direction:column;gap:.5rem}
.card p{margin:0}.desc{color:var(--mut);font-size:.95rem}
.muted{color:var(--mut)}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin-top:auto}
.actions form{margin:0}
.btn{display:inline-block;font:inherit;font-weight:600;padding:.45rem .95rem;border-radius:6px;border:1px solid var(--acc);background:var(--acc);color:var(--acc-fg);text-decoration:none;cursor:pointer;min-height:2.25rem}
.btn.secondary{background:transparent;color:var(--acc)}
.btn.danger{background:transparent;color:var(--bad);border-color:var(--bad)}
.btn.small{padding:.2rem .6rem;min-height:1.9rem;font-size:.9rem}
.btn.link{background:none;border:none;color:var(--acc);padding:.25rem;min-height:0;font-weight:500;text-decoration:underline}
.btn[disabled]{opacity:.55;cursor:not-allowed}
progress{width:100%;height:.9rem;accent-color:var(--acc)}
.status{font-size:.95rem}
.state{display:inline-block;padding:.05rem .5rem;border-radius:999px;font-size:.85rem;border:1px solid currentColor}
.state-ready{color:var(--ok)}.state-queued,.state-provisioning,.state-starting{color:var(--warn)}
.state-failed{color:var(--bad)}.state-stopping,.state-suspended,.state-terminated{color:var(--mut)}
.tag{font-size:.75rem;border:1px solid var(--bd);border-radius:4px;padding:0 .3rem;color:var(--mut)}
.notice h2{margin-top:0}.notice{border-left:4px solid var(--acc);background:var(--card);padding:.6rem .9rem;margin:0 0 1rem;border-radius:4px}
.notice.error{border-color:var(--bad)}
.notice.warn{border-color:var(--warn)}
.secret{display:block;word-break:break-all;background:var(--bg);border:1px dashed var(--bd);padding:.6rem;border-radius:6px;font-size:.95rem}
.table-wrap{overflow-x:auto;background:var(--card);border:1px solid var(--bd);border-radius:10px}
table{border-collapse:collapse;width:100%;font-size:.93rem}
caption{text-align:left;padding:.6rem .75rem;color:var(--mut);caption-side:top}
th,td{text-align:left;padding:.45rem .75rem;border-top:1px solid var(--bd);vertical-align:middle;white-space:nowrap}
thead th{border-top:none;font-weight:600;background:var(--stripe)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
td progress{width:6rem}
td form{display:inline;margin:0}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.88rem}
form.filters,form.inline{display:flex;flex-wrap:wrap;gap:.75rem;align-items:flex-end;margin:0 0 .75rem}
.field{display:flex;flex-direction:column;gap:.2rem;min-width:0}
.field label{font-size:.85rem;color:var(--mut)}
input[type=text],input[type=date],select{font:inherit;padding:.4rem .5rem;border:1px solid var(--bd);border-radius:6px;background:var(--card);color:var(--fg);min-height:2.25rem;max-width:100%}
.login input[type=text]{width:100%}
.login .field{margin-bottom:.75rem}
.chart{margin:0}.chart>svg{width:100%;height:auto;display:block}
.chart .grid{stroke:var(--bd);stroke-width:1}
.chart text{fill:var(--mut);font-size:11px;font-family:inherit}
.legend{display:flex;flex-wrap:wrap;gap:.4rem 1rem;list-style:none;padding:0;margin:.5rem 0 0;font-size:.9rem}
.legend svg{vertical-align:-1px}
.counts{display:flex;flex-wrap:wrap;gap:.35rem}
@media (max-width:40rem){main{padding:.75rem}.panel{padding:.85rem}h1{font-size:1.25rem}.who .user{max-width:7rem}th,td{padding:.4rem .5rem}}
`

const JS = `
(function(){
'use strict';
// Times: show them in the reader's time zone.
document.querySelectorAll('time[datetime]').forEach(function(t){
  var d=new Date(t.getAttribute('datetime'));
  if(!isNaN(d))t.textContent=d.toLocaleString(undefined,{dateStyle:'medium',timeStyle:'short'});
});
// Destructive buttons ask first.
var leaving=false;
document.addEventListener('submit',function(e){
  var f=e.target,msg=f&&f.getAttribute&&f.getAttribute('data-confirm');
  if(msg&&!window.confirm(msg)){e.preventDefault();return;}
  leaving=true;
},true);
// A live update must never cancel a navigation the user started (a form post, a link).
window.addEventListener('beforeunload',function(){leaving=true;});
// Live progress (server-sent events); without JavaScript the page refreshes itself instead.
var url=document.body.getAttribute('data-events');
if(!url||!window.EventSource)return;
var es=new EventSource(url),reloading=false;
function reload(){if(!reloading&&!leaving){reloading=true;es.close();window.location.reload();}}
function label(s){return {queued:'Waiting in the queue',provisioning:'Preparing the machine',starting:'Starting the application',ready:'Ready',stopping:'Stopping',suspended:'Suspended (disk kept)'}[s]||s;}
es.onmessage=function(ev){
  if(leaving)return;
  var m;try{m=JSON.parse(ev.data);}catch(_){return;}
  var list=m.type==='remove'?[{id:m.instanceId,gone:true}]:m.instances;
  (list||[]).forEach(function(i){
    var el=document.querySelector('[data-instance="'+i.id+'"]');
    if(!el){if(!i.gone&&m.type==='upsert'&&document.querySelector('[data-template="'+i.template+'"]'))reload();return;}
    if(i.gone||i.state==='stopping'||i.state==='terminated'||i.state==='failed'){reload();return;}
    el.setAttribute('data-state',i.state);
    var st=el.querySelector('.js-state');if(st){st.textContent=label(i.state);st.className='js-state state state-'+i.state;}
    var p=el.querySelector('.js-progress');if(p){p.value=i.state==='ready'?100:i.progress;p.textContent=Math.round(p.value)+'%';}
    var msg=el.querySelector('.js-msg');if(msg){msg.textContent=i.state==='queued'&&i.queuePosition?('Position in queue: '+i.queuePosition):(i.message||'');}
    var wrap=el.querySelector('.js-progress-wrap'),open=el.querySelector('.js-open');
    if(i.state==='ready'){if(wrap)wrap.hidden=true;if(open){open.hidden=false;}}
  });
};
})();
`

function asset(name: string, ext: string, text: string, type: string) {
  const hash = createHash('sha256').update(text).digest('hex').slice(0, 10)
  return { path: `/assets/${name}.${hash}.${ext}`, body: text, type, etag: `"${hash}"` }
}

export const ASSETS = {
  css: asset('dashboard', 'css', CSS, 'text/css; charset=utf-8'),
  js: asset('dashboard', 'js', JS, 'text/javascript; charset=utf-8'),
} as const
